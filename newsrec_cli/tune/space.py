"""The search space of `newsrec tune`: `[tune.space]` in TOML, checked against TrainSettings.

    [tune.space]
    lr = { low = 1e-4, high = 5e-3, log = true }
    dim = { choices = [64, 128] }
    negatives = { low = 2, high = 8 }

Every key must be a field of TrainSettings, so settings added to the model later are searchable
without a change here; every bound and choice is validated by that field before a trial runs.
"""

from __future__ import annotations

import re
import tomllib
import types
import typing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from newsrec_cli.errors import SettingsError
from newsrec_cli.settings import STAGES, TrainSettings

DEFAULT_SPACE = "default_space.toml"
# Settings that change how a run is executed or measured, not the model: searching them would
# compare trials on different hardware, budgets or validation sets.
NOT_SEARCHABLE = frozenset(
    {"device", "workers", "threads", "eval_batch_size", "time_budget", "seed", "valid_impressions"}
)
ENTRY_KEYS = frozenset({"low", "high", "log", "step", "choices"})

Choice = bool | int | float | str


@dataclass(frozen=True)
class Param:
    """One searched setting: a numeric range (int or float, maybe log or stepped) or choices."""

    name: str
    kind: str  # "int", "float" or "choice"
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Choice, ...] = ()

    def suggest(self, trial: Any) -> Any:
        """The value an Optuna trial proposes for this setting."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(
                self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log
            )  # type: ignore[arg-type]
        return trial.suggest_float(self.name, float(self.low), float(self.high), step=self.step, log=self.log)  # type: ignore[arg-type]

    def contains(self, value: Any) -> bool:
        """Whether Optuna can record `value` for this setting (the defaults may lie outside)."""
        if self.kind == "choice":
            return any(type(value) is type(c) and value == c for c in self.choices)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return self.low <= value <= self.high  # type: ignore[operator]

    def describe(self) -> str:
        if self.kind == "choice":
            return " | ".join(str(c) for c in self.choices)
        scale = ", log" if self.log else (f", step {self.step}" if self.step else "")
        return f"{self.low} .. {self.high}{scale}"

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "choice":
            return {"choices": list(self.choices)}
        out: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out


@dataclass(frozen=True)
class SearchSpace:
    params: tuple[Param, ...]
    source: str

    def suggest(self, trial: Any) -> dict[str, Any]:
        return {p.name: p.suggest(trial) for p in self.params}

    def suggest_defaults(self, trial: Any, defaults: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(settings, those outside the space): the defaults' trial records what Optuna can hold."""
        values, outside = {}, {}
        for p in self.params:
            if p.contains(defaults[p.name]):
                values[p.name] = p.suggest(trial)  # the enqueued default comes back
            else:
                values[p.name] = outside[p.name] = defaults[p.name]
        return values, outside

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def to_dict(self) -> dict[str, Any]:
        return {p.name: p.to_dict() for p in self.params}


def default_space_text() -> str:
    return resources.files("newsrec_cli.tune").joinpath(DEFAULT_SPACE).read_text(encoding="utf-8")


def load_space(path: Path | None) -> SearchSpace:
    """The space of `path` (its `[tune.space]` table), or the packaged default."""
    if path is None:
        text, source = default_space_text(), f"default ({DEFAULT_SPACE})"
    else:
        try:
            text, source = Path(path).read_text(encoding="utf-8"), str(path)
        except FileNotFoundError:
            raise SettingsError(f"{path}: space file not found") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{source}: not valid TOML: {exc}") from None
    table = data.get("tune", {}).get("space") if isinstance(data.get("tune"), dict) else None
    if not isinstance(table, dict) or not table:
        raise SettingsError(f"{source}: no [tune.space] table with at least one setting to search")
    return parse_space(table, source, text)


def parse_space(table: dict[str, Any], source: str, text: str = "") -> SearchSpace:
    """Check every entry against TrainSettings; the first bad one is a SettingsError naming it."""
    return SearchSpace(tuple(_param(name, entry, source, text) for name, entry in table.items()), source)


def _where(source: str, text: str, name: str) -> str:
    """`FILE:LINE` of the key in the file when it can be found, else `FILE`."""
    for number, line in enumerate(text.splitlines(), start=1):
        if re.match(rf"\s*{re.escape(name)}\s*=", line):
            return f"{source}:{number}"
    return source


def _param(name: str, entry: Any, source: str, text: str) -> Param:
    where = _where(source, text, name)
    fields = TrainSettings.model_fields
    if name not in fields:
        searchable = sorted(set(fields) - NOT_SEARCHABLE)
        raise SettingsError(
            f"{where}: [tune.space] {name}: not a train setting; allowed: {', '.join(searchable)}"
        )
    if name in NOT_SEARCHABLE:
        raise SettingsError(
            f"{where}: [tune.space] {name}: not searchable (it changes how trials run or are measured, "
            "not the model); set it in [train] of --config"
        )
    if isinstance(entry, list):
        entry = {"choices": entry}
    if not isinstance(entry, dict):
        raise SettingsError(
            f"{where}: [tune.space] {name} = {entry!r}: give {{ low = A, high = B }} or {{ choices = [...] }}; "
            "fixed values go in [train] of --config"
        )
    unknown = sorted(set(entry) - ENTRY_KEYS)
    if unknown:
        raise SettingsError(
            f"{where}: [tune.space] {name}: unknown key {unknown[0]!r}; allowed: low, high, log, step, choices"
        )
    if "choices" in entry:
        if set(entry) != {"choices"}:
            raise SettingsError(
                f"{where}: [tune.space] {name}: choices cannot be mixed with low/high/log/step"
            )
        choices = entry["choices"]
        if not isinstance(choices, list) or not choices:
            raise SettingsError(f"{where}: [tune.space] {name}: choices must be a non-empty list")
        for choice in choices:
            if not isinstance(choice, bool | int | float | str):
                raise SettingsError(
                    f"{where}: [tune.space] {name}: choice {choice!r} must be a number, string or boolean"
                )
            _check_value(name, choice, where)
        return Param(name, "choice", choices=tuple(choices))
    if "low" not in entry or "high" not in entry:
        raise SettingsError(
            f"{where}: [tune.space] {name}: a range needs both low and high (or give choices)"
        )
    kind = _numeric_kind(name)
    if kind is None:
        raise SettingsError(
            f"{where}: [tune.space] {name}: not a numeric setting; give {{ choices = [...] }}"
        )
    low, high, step, log = entry["low"], entry["high"], entry.get("step"), entry.get("log", False)
    for label, value in (("low", low), ("high", high), ("step", step)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SettingsError(f"{where}: [tune.space] {name}: {label} = {value!r} is not a number")
        if kind == "int" and not float(value).is_integer():
            raise SettingsError(f"{where}: [tune.space] {name}: {label} = {value!r} must be an integer")
    if not isinstance(log, bool):
        raise SettingsError(f"{where}: [tune.space] {name}: log must be true or false")
    if not low < high:
        raise SettingsError(f"{where}: [tune.space] {name}: low ({low}) must be below high ({high})")
    if log and low <= 0:
        raise SettingsError(f"{where}: [tune.space] {name}: a log range needs low > 0 (low = {low})")
    if log and step is not None:
        raise SettingsError(f"{where}: [tune.space] {name}: log and step cannot be combined")
    if step is not None and step <= 0:
        raise SettingsError(f"{where}: [tune.space] {name}: step must be positive")
    cast = int if kind == "int" else float
    low, high = cast(low), cast(high)
    step = cast(step) if step is not None else None
    _check_value(name, low, where)
    _check_value(name, high, where)
    return Param(name, kind, low=low, high=high, log=log, step=step)


def _numeric_kind(name: str) -> str | None:
    annotation = TrainSettings.model_fields[name].annotation
    args = set(typing.get_args(annotation)) if isinstance(annotation, types.UnionType) else {annotation}
    args.discard(type(None))
    if args == {int}:
        return "int"
    if args == {float} or args == {int, float}:
        return "float"
    return None


def _check_value(name: str, value: Any, where: str) -> None:
    """The setting's own validation (range, allowed words) applied to one bound or choice."""
    try:
        TrainSettings(**{name: value})
    except ValidationError as exc:
        message = exc.errors()[0]["msg"]
        raise SettingsError(f"{where}: [tune.space] {name} = {value!r}: {message}") from None


def read_tune_config(path: Path | None) -> tuple[dict[str, Any], dict[str, Any] | None, str]:
    """A --config file for `tune`: its stage tables (as `settings.resolve` takes them), its
    `[tune.space]` table if any, and the file's text (for line numbers in errors)."""
    if path is None:
        return {}, None, ""
    try:
        text = Path(path).read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except FileNotFoundError:
        raise SettingsError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}") from None
    tune = data.pop("tune", None)
    known = {stage.section for stage in STAGES}
    for key, value in data.items():
        if key not in known:
            allowed = ", ".join(sorted(known | {"tune"}))
            raise SettingsError(f"{path}: unknown section [{key}]; allowed: {allowed}")
        if not isinstance(value, dict):
            raise SettingsError(f"{path}: [{key}] must be a table")
    if tune is None:
        return data, None, text
    if not isinstance(tune, dict) or set(tune) - {"space"}:
        raise SettingsError(f"{path}: [tune] holds only the [tune.space] table (options are flags of `tune`)")
    return data, tune.get("space"), text
