"""`newsrec data`: make, inspect, check and fetch MIND datasets."""

from __future__ import annotations

import os
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from newsrec_cli.commands.common import (
    ConfigOption,
    JsonOption,
    console,
    err_console,
    handle_errors,
    print_json,
    progress,
    settings_from,
)
from newsrec_cli.commands.options import Stage, settings_options
from newsrec_cli.errors import InputError
from newsrec_cli.mind.cache import ENV as CACHE_ENV
from newsrec_cli.mind.dataset import load_dataset
from newsrec_cli.mind.download import download_dataset
from newsrec_cli.mind.stats import dataset_stats
from newsrec_cli.mind.synth import synthesize
from newsrec_cli.mind.synth_scale import ScaleShape, synthesize_scale
from newsrec_cli.mind.validate import exit_code, validate_dataset
from newsrec_cli.settings import DataSettings, SynthSettings

app = typer.Typer(
    help="Make, inspect, check and download MIND datasets.\n\nExample: newsrec data synth --out demo/data && newsrec data stats demo/data",
    no_args_is_help=True,
)


class Preset(StrEnum):
    default = "default"
    trending = "trending"
    large = "large"


TRENDING = 2.5  # --preset trending: the buzz weight unless --trending is given


@app.command("synth")
@handle_errors
def synth(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write train/ and valid/ into.")],
    news: Annotated[int | None, typer.Option(help="Number of news items.")] = None,
    users: Annotated[int | None, typer.Option(help="Number of users.")] = None,
    days: Annotated[int | None, typer.Option(help="Days of impressions; the last is valid/.")] = None,
    impressions_per_user: Annotated[float | None, typer.Option(help="Mean impressions per user.")] = None,
    seed: Annotated[int | None, typer.Option(help="Same seed, same files.")] = None,
    trending: Annotated[
        float | None,
        typer.Option(help="Weight of a time-varying buzz per news in the clicks (--preset trending: 2.5)."),
    ] = None,
    preset: Annotated[
        Preset,
        typer.Option(
            metavar="<name>",
            help="default: the built-in dataset (the options above); trending: the same with clicks "
            "that follow a time-varying popularity (--trending 2.5); large: MIND-large-shaped "
            "(161k news, 1M users, 2.2M train and 2.4M valid impressions) for the scale benchmark.",
        ),
    ] = Preset.default,
    scale: Annotated[
        float, typer.Option(help="With --preset large: this fraction of its sizes (e.g. 0.01).")
    ] = 1.0,
    force: Annotated[
        bool, typer.Option("--force", help="Write into a non-empty output folder (its files are replaced).")
    ] = False,
    config: ConfigOption = None,
    json_out: JsonOption = False,
) -> None:
    """Write a deterministic synthetic MIND dataset (train/, valid/, entity_embedding.vec).

    Users have tastes over topics and entities; titles, abstracts, categories and entities carry
    them; clicks (about 4%) follow the tastes. Content predicts clicks, popularity only a little.
    `--preset large` writes a MIND-large-shaped set in bounded memory (a few minutes, ~3 GB).

    Example: newsrec data synth --out data/synth --news 3000 --users 2000 --seed 0

    Clicks that follow what is trending (for --use-popularity): newsrec data synth --out data/trend --preset trending
    """
    settings = settings_from(
        SynthSettings,
        config,
        news=news,
        users=users,
        days=days,
        impressions_per_user=impressions_per_user,
        seed=seed,
        trending=TRENDING if trending is None and preset is Preset.trending else trending,
    ).settings
    labels = {"news": "news", "write": "impressions", "write train": "train", "write valid": "valid"}
    with progress(unit="rows", transient=True) as bar:
        tasks: dict[str, int] = {}

        def on_progress(phase: str, done: int, total: int) -> None:
            if phase not in labels:
                return
            if phase not in tasks:
                tasks[phase] = bar.add_task(f"synth {labels[phase]}", total=total)
            bar.update(tasks[phase], completed=done, total=total)

        if preset is Preset.large:
            summary = synthesize_scale(out, ScaleShape.large(scale), settings.seed, on_progress, force=force)
        else:
            summary = synthesize(out, settings, on_progress, force=force)
    if json_out:
        print_json(
            {
                "root": str(summary.root),
                "news": summary.news,
                "users": summary.users,
                "entities": summary.entities,
                "impressions": summary.impressions,
                "candidates": summary.candidates,
                "clicks": summary.clicks,
                "click_rate": round(summary.click_rate, 5),
                "seed": settings.seed,
            }
        )
        return
    table = Table(title=f"Synthetic MIND dataset in {summary.root}")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("news", f"{summary.news:,}")
    table.add_row("users", f"{summary.users:,}")
    table.add_row("entities", f"{summary.entities:,}")
    for split, count in summary.impressions.items():
        table.add_row(f"impressions ({split})", f"{count:,}")
    table.add_row("candidates", f"{summary.candidates:,}")
    table.add_row("click rate", f"{summary.click_rate:.2%}")
    table.add_row("seed", str(settings.seed))
    console.print(table)


# Reading a dataset: of the data settings, how malformed lines are handled.
READ = Stage(DataSettings, only=("on_bad_lines",))


@app.command("stats")
@handle_errors
@settings_options(READ)
def stats(
    path: Annotated[Path, typer.Argument(help="A MIND folder, or a parent of train/ valid/ test/.")],
    json_out: JsonOption = False,
    *,
    settings: DataSettings,
) -> None:
    """Describe a dataset per split: sizes, click rate, history lengths, ID coverage, dates.

    Example: newsrec data stats data/synth --json
    """
    result = dataset_stats(path, on_bad_lines=settings.on_bad_lines)
    if json_out:
        print_json(result.to_dict())
        return
    table = Table(title=f"MIND dataset {result.root}")
    table.add_column("")
    for split in result.splits:
        table.add_column(split.name, justify="right")

    def row(label: str, fmt) -> None:
        table.add_row(label, *(fmt(s) for s in result.splits))

    row("news (news.tsv rows)", lambda s: f"{s.news:,}")
    row("users", lambda s: f"{s.users:,}")
    row("impressions", lambda s: f"{s.impressions:,}")
    row("candidates", lambda s: f"{s.candidates:,}")
    row("candidates / impression", lambda s: f"{s.candidates_per_impression:.1f}")
    row("click rate", lambda s: "unlabeled" if s.click_rate is None else f"{s.click_rate:.2%}")
    row("history length mean", lambda s: f"{s.history_mean:.1f}")
    row(
        "history p10/p50/p90/p99",
        lambda s: "/".join(f"{s.history_percentiles[p]:.0f}" for p in ("p10", "p50", "p90", "p99")),
    )
    row("empty histories", lambda s: f"{s.history_empty:.1%}")
    row("history IDs in news.tsv", lambda s: f"{s.history_in_news:.2%}")
    row("candidate IDs in news.tsv", lambda s: f"{s.candidates_in_news:.2%}")
    row("news with entities", lambda s: f"{s.news_with_entities:.1%}")
    row("first impression", lambda s: s.first_time or "-")
    row("last impression", lambda s: s.last_time or "-")
    row("days", lambda s: str(s.days))
    if any(s.skipped_lines for s in result.splits):
        row("skipped bad lines", lambda s: f"{s.skipped_lines:,}")
    console.print(table)
    for report in result.reports:
        if not report.ok:
            err_console.print(f"[yellow]warning:[/] {report.summary()}", highlight=False, soft_wrap=True)


@app.command("prepare")
@handle_errors
@settings_options(READ)
def prepare(
    path: Annotated[Path, typer.Argument(help="A MIND folder, or a parent of train/ valid/ test/.")],
    json_out: JsonOption = False,
    *,
    settings: DataSettings,
) -> None:
    """Parse every split's behaviors.tsv once into the memory-mapped cache later commands read.

    The cache goes to .newsrec-cache/ beside each behaviors.tsv (a user cache folder where that
    is read-only; NEWSREC_CACHE=DIR to choose, =off to disable). Splits already cached for the
    current file are only checked. Train, evaluate and the others do the same on first read; this
    does it on purpose, with a progress bar (MIND-large's train split takes about a minute).

    Example: newsrec data prepare data/MINDlarge
    """
    start = time.perf_counter()
    with progress(unit="MB", transient=True) as bar:
        tasks: dict[str, int] = {}

        def on_progress(split: str, done: int, size: int) -> None:
            if split not in tasks:
                tasks[split] = bar.add_task(f"parse {split}", total=size / 1e6)
            bar.update(tasks[split], completed=done / 1e6)

        dataset = load_dataset(path, on_bad_lines=settings.on_bad_lines, progress=on_progress)
    seconds = time.perf_counter() - start
    if not dataset.caches:
        raise InputError(
            f"caching is off ({CACHE_ENV}={os.environ.get(CACHE_ENV)}): nothing was written", path=path
        )
    rows = [
        {
            "split": split,
            "behaviors": str(info.source),
            "impressions": info.impressions,
            "candidates": info.candidates,
            "cache": str(info.folder),
            "bytes": info.bytes,
            "status": "cached already (whole source hashed, cache checksums verified)"
            if info.hit
            else "damaged: parsed again and written"
            if info.damage
            else "parsed and written",
        }
        for split, info in dataset.caches.items()
    ]
    if json_out:
        print_json({"seconds": round(seconds, 3), "splits": rows})
        return
    table = Table(title=f"Parse-once cache of {path} ({seconds:.1f} s)")
    for column in ("split", "impressions", "candidates", "cache folder", "size", "status"):
        table.add_column(
            column,
            justify="right" if column in ("impressions", "candidates", "size") else "left",
            overflow="fold",
        )
    for row in rows:
        table.add_row(
            row["split"],
            f"{row['impressions']:,}",
            f"{row['candidates']:,}",
            row["cache"],
            f"{row['bytes'] / 1e6:,.1f} MB",
            row["status"],
        )
    console.print(table)
    for report in dataset.reports:
        if not report.ok:
            err_console.print(f"[yellow]warning:[/] {report.summary()}", highlight=False, soft_wrap=True)


STATUS_STYLE = {"OK": "green", "WARN": "yellow", "FAIL": "bold red"}


@app.command("validate")
@handle_errors
def validate(
    path: Annotated[Path, typer.Argument(help="A MIND folder, or a parent of train/ valid/ test/.")],
    json_out: JsonOption = False,
) -> None:
    """Check a dataset: every malformed line of every file, IDs, clicks, times, vectors.

    Prints OK, WARN or FAIL per check; exits 1 when any check fails.

    Example: newsrec data validate data/MINDsmall
    """
    checks = validate_dataset(path)
    code = exit_code(checks)
    if json_out:
        print_json({"ok": code == 0, "checks": [c.to_dict() for c in checks]})
        raise typer.Exit(code)
    table = Table(title=f"Checks of {path}")
    table.add_column("check")
    table.add_column("split")
    table.add_column("status")
    table.add_column("detail", overflow="fold")
    for c in checks:
        table.add_row(c.name, c.split, f"[{STATUS_STYLE[c.status]}]{c.status}[/]", c.detail)
    console.print(table)
    counts = {s: sum(c.status == s for c in checks) for s in STATUS_STYLE}
    verdict = "[bold red]FAILED[/]" if code else "[green]passed[/]"
    console.print(f"{verdict}: {counts['OK']} OK, {counts['WARN']} WARN, {counts['FAIL']} FAIL")
    raise typer.Exit(code)


class Kind(StrEnum):
    demo = "demo"
    small = "small"
    large = "large"


@app.command("download")
@handle_errors
def download(
    kind: Annotated[
        Kind, typer.Argument(help="demo (5k users), small (50k users) or large (1M users, with test).")
    ],
    dest: Annotated[
        Path, typer.Option("--dest", "-d", help="Folder to unpack train/, valid/ (and test/) into.")
    ],
    base_url: Annotated[
        str | None,
        typer.Option(
            "--base-url",
            envvar="NEWSREC_DOWNLOAD_BASE_URL",
            help="A mirror with the same file names (MINDsmall_train.zip, ...) instead of the official host.",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Download and unpack again even if done before.")
    ] = False,
    keep_archives: Annotated[
        bool, typer.Option("--keep-archives", help="Keep the .zip files in DEST/.downloads after unpacking.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds without data before giving up.")] = 30.0,
    json_out: JsonOption = False,
) -> None:
    """Download the official MIND archives, check them and unpack them into DEST/train, valid, test.

    An interrupted download resumes where it stopped when you rerun the same command. MIND is for
    non-commercial research only: see https://msnews.github.io for its terms.

    Example: newsrec data download small --dest data/MINDsmall
    """
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=True, disable=not err_console.is_terminal) as bar:
        tasks: dict[str, int] = {}

        def on_progress(name: str, done: int, total: int | None) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total)
            bar.update(tasks[name], completed=done, total=total)

        results = download_dataset(
            kind.value,
            dest,
            base_url=base_url,
            force=force,
            keep_archives=keep_archives,
            timeout=timeout,
            progress=on_progress,
        )
    if json_out:
        print_json(
            [
                {
                    "archive": r.archive.name,
                    "url": r.url,
                    "folder": str(r.folder),
                    "bytes": r.bytes,
                    "resumed_from": r.resumed_from,
                    "skipped": r.skipped,
                    "files": r.files,
                }
                for r in results
            ]
        )
        return
    table = Table(title=f"MIND {kind.value} in {dest}")
    table.add_column("archive")
    table.add_column("folder")
    table.add_column("size", justify="right")
    table.add_column("note")
    table.add_column("files")
    for r in results:
        note = (
            "already there"
            if r.skipped
            else (
                f"resumed at {r.resumed_from / 1e6:.1f} MB" if r.resumed_from else "downloaded, CRC checked"
            )
        )
        size = "-" if r.skipped else f"{r.bytes / 1e6:.1f} MB"
        table.add_row(r.archive.name, str(r.folder), size, note, ", ".join(r.files))
    console.print(table)
