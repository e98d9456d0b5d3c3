"""The offline protocol: which impressions train, which choose the epoch, which are reported.

The default never reports the split that chose: with `train/` + `valid/` and no labelled `test/`,
the last day of `train/` chooses and `valid/` is reported; with a labelled `test/`, `valid/`
chooses and `test/` is reported; a single folder (or `train/` alone) is cut twice, by time (or by
impression without usable times): its tail is reported, the part before it chooses. Choosing on
the reported split takes `select_on="valid"` (`--select-on valid`), and says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from newsrec_cli.errors import InputError, SettingsError
from newsrec_cli.mind.behaviors import Impressions
from newsrec_cli.mind.layout import SINGLE
from newsrec_cli.mind.split import DAY, split_by_impression, split_by_time

if TYPE_CHECKING:
    from newsrec_cli.mind.dataset import MindDataset

SplitKind = Literal["auto", "time", "impression"]
SelectOn = Literal["auto", "valid"]


@dataclass(frozen=True)
class Protocol:
    """Training impressions, the selection split (chooses the epoch) and the reported split."""

    train: Impressions
    select: Impressions
    select_name: str  # where the selection impressions come from, in words
    report: Impressions
    report_name: str
    same: bool  # the reported split also chose the epoch: its model figures are optimistic

    @property
    def note(self) -> str:
        """One sentence for `train`: the split that chooses, and the one kept for reporting."""
        if self.same:
            return f"validation: {self.select_name}, also the reported split (--select-on valid: optimistic)"
        return f"validation: {self.select_name}; reported later: {self.report_name}"

    @property
    def title(self) -> str:
        """How a table of the reported split names its protocol."""
        if self.same:
            return f"chosen and reported on {self.select_name} (the same split: optimistic)"
        return f"chosen on {self.select_name}, reported on {self.report_name}"


def _span_days(imps: Impressions) -> int:
    days = imps.times.astype("datetime64[D]")
    return int((days.max() - days.min()) / DAY) + 1 if len(imps) else 0


def carve(
    imps: Impressions, where: str, split: SplitKind, valid_days: int | None, fraction: float, seed: int
) -> tuple[Impressions, Impressions, str]:
    """(before, held out, the held-out part in words): by time, or by impression at random."""
    if len(imps) == 0:
        raise InputError(f"no impressions in {where} to split", path=imps.source or None)
    one_day = _span_days(imps) < 2
    if split == "time" or (split == "auto" and not one_day):
        before, held = split_by_time(imps, valid_days)
        first = held.times.min().astype("datetime64[D]")
        last = held.times.max().astype("datetime64[D]")
        days = f"{first}" if first == last else f"{first} to {last}"
        return (
            before,
            held,
            f"the last {'day' if first == last else 'days'} of {where} ({days}, {len(held):,} of {len(imps):,} impressions)",
        )
    before, held = split_by_impression(imps, fraction, seed)
    why = "its impressions span one day" if one_day and split == "auto" else "--split impression"
    return (
        before,
        held,
        f"{len(held):,} of {len(imps):,} impressions of {where} held out at random ({why}; "
        "same users and news on both sides)",
    )


def make_protocol(
    dataset: MindDataset,
    split: SplitKind = "auto",
    valid_days: int | None = None,
    valid_fraction: float = 0.1,
    seed: int = 42,
    select_on: SelectOn = "auto",
) -> Protocol:
    """The three parts of the offline protocol for this dataset (see the module docstring)."""
    return split_protocol(
        dataset.splits, dataset.folders, dataset.root, split, valid_days, valid_fraction, seed, select_on
    )


def split_protocol(
    splits: dict[str, Impressions],
    folders: dict[str, Path],
    root: Path,
    split: SplitKind = "auto",
    valid_days: int | None = None,
    valid_fraction: float = 0.1,
    seed: int = 42,
    select_on: SelectOn = "auto",
) -> Protocol:
    """`make_protocol` from the impressions of each split and their folders (`data validate` has no
    MindDataset: it reads in skip mode, split by split)."""
    if "train" in splits:
        train, where = splits["train"], "train/"
    elif SINGLE in splits:
        train, where = splits[SINGLE], str(folders[SINGLE].name) + "/"
    else:
        raise InputError("no training impressions (train/behaviors.tsv)", path=root)
    valid = splits.get("valid")
    test = splits.get("test")
    test = test if test is not None and test.labeled else None
    valid_name = "valid/" if valid is None else f"valid/ ({folders['valid']})"
    test_name = "" if test is None else f"test/ ({folders['test']})"

    if select_on == "valid":
        if valid is None:
            raise SettingsError("data.select_on = 'valid': the dataset has no valid/ (or dev/) folder")
        if test is not None:
            return Protocol(train, valid, valid_name, test, test_name, same=False)
        return Protocol(train, valid, valid_name, valid, valid_name, same=True)
    if valid is not None and test is not None and split == "auto" and valid_days is None:
        return Protocol(train, valid, valid_name, test, test_name, same=False)
    if test is not None or valid is not None:
        report, report_name, rest = (
            (test, test_name, train) if test is not None else (valid, valid_name, train)
        )
    else:
        # One folder: its tail is reported, the part before the tail chooses the epoch.
        rest, report, tail = carve(train, where, split, valid_days, valid_fraction, seed)
        report_name = tail
        where = f"{where} before those"
    try:
        fit, select, select_name = carve(rest, where, split, valid_days, valid_fraction, seed)
    except InputError as exc:
        if valid is None:
            raise
        raise InputError(
            f"{exc.reason}; or choose on valid/ itself with --select-on valid (then also reported: optimistic)",
            path=exc.path,
            line=exc.line,
            field=exc.field,
        ) from None
    assert report is not None
    return Protocol(fit, select, select_name, report, report_name, same=False)
