"""One rank of `newsrec train --nproc N`: the process torch.distributed.run starts N times.

    python -m newsrec_cli.commands.train_worker REQUEST.json

REQUEST is what the launching `newsrec train` resolved: the TrainJob (settings, paths) and --json; RANK, WORLD_SIZE
and LOCAL_RANK come from the launcher. Not a user command: a user's own torchrun calls
`-m newsrec_cli train ...` instead.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import typer

from newsrec_cli.commands.common import handle_errors
from newsrec_cli.commands.train import run_job
from newsrec_cli.runs.records import TrainJob


@handle_errors
def _work(path: Path) -> None:
    request = json.loads(path.read_text(encoding="utf-8"))
    run_job(TrainJob.from_json(request["job"]), json_out=bool(request["json_out"]))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m newsrec_cli.commands.train_worker REQUEST.json\n")
        return 2
    try:
        _work(Path(args[0]))
    except (typer.Exit, click.exceptions.Exit) as exc:
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
