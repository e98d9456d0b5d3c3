"""The files of a run directory: their names, the news table (vocab_news.tsv), and clearing a run.

Layout: config.json (every effective setting, the data, store and graph paths), vocab_*.txt /
vocab_news.tsv, model.pt (best weights), last.pt (resume state), history.jsonl, tensorboard/.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from newsrec_cli import atomic
from newsrec_cli.errors import InputError
from newsrec_cli.mind import NewsTable, Vocab
from newsrec_cli.runs.context import VOCAB_FILES

CONFIG = "config.json"
MODEL = "model.pt"
LAST = "last.pt"
HISTORY = "history.jsonl"
NEWS_TABLE = "vocab_news.tsv"
TENSORBOARD = "tensorboard"
RUN_FORMAT = "newsrec-run"


def save_news_table(path: Path, news_vocab: Vocab, news: NewsTable) -> None:
    """The run's news vocabulary with each news' category and subcategory (tab-separated)."""
    lines = []
    for id_ in news_vocab.ids[1:]:
        row = news.index.get(id_)
        cat, sub = (news.category[row], news.subcategory[row]) if row is not None else ("", "")
        lines.append(f"{id_}\t{cat}\t{sub}\n")
    atomic.write_text(path, "".join(lines))


def load_news_table(path: Path) -> tuple[Vocab, NewsTable]:
    if not path.is_file():
        raise InputError("missing news vocabulary of the run", path=path)
    table = NewsTable()
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
        if not line:
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise InputError("expected NewsID, category, subcategory", path=path, line=number)
        table.append((parts[0], parts[1], parts[2], "", "", ""), [], [])
    return Vocab(table.ids), table


def clear_run(run_dir: Path) -> list[Path]:
    """Delete the files a run (and `evaluate` on it) writes in `run_dir`; other files stay.

    Returns what was deleted. For `newsrec train --overwrite`.
    """
    if not run_dir.is_dir():
        return []
    names = {
        CONFIG,
        MODEL,
        LAST,
        HISTORY,
        NEWS_TABLE,
        *VOCAB_FILES.values(),
        "prediction.txt",
        "prediction.zip",
        "prediction-replay.txt",
        "prediction-replay.zip",
    }
    removed = []
    for path in sorted(run_dir.iterdir()):
        if path.name == TENSORBOARD and path.is_dir():
            shutil.rmtree(path)
        elif path.is_file() and (
            path.name in names
            or (path.name.startswith("metrics") and path.suffix == ".json")
            or path.name.startswith(atomic.TMP_PREFIX)
            or path.name.endswith(".tmp")
        ):
            path.unlink()
        else:
            continue
        removed.append(path)
    return removed
