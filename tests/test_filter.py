"""`newsrec filter`: each rule on a hand-made dataset, the written folder, the command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from newsrec_cli.cli import app
from newsrec_cli.embed.store import commit, new_meta
from newsrec_cli.mind import load_dataset
from newsrec_cli.mind.filter import filter_dataset
from newsrec_cli.settings import FilterSettings

runner = CliRunner()
NEWS_IDS = [f"N{i}" for i in range(1, 9)]
TRAIN = [
    ["1", "U1", "11/13/2019 9:00:00 AM", "N1 N2 N3", "N4-1 N5-0"],
    ["2", "U2", "11/13/2019 10:00:00 PM", "N1", "N4-0 N6-1"],
    ["3", "U1", "11/14/2019 8:00:00 AM", "N1 N7", "N5-1 N4-0"],
    ["4", "U3", "11/14/2019 11:30:00 AM", "", "N4-1 N5-0 N6-0"],
    ["5", "U4", "11/14/2019 1:00:00 PM", "N7 N8", "N4-0 N5-1"],
]
VALID = [
    ["1", "U1", "11/15/2019 9:00:00 AM", "N1 N2 N3 N5", "N6-1 N4-0"],
    ["2", "U3", "11/15/2019 9:10:00 AM", "N4", "N8-1 N5-0"],
]


def _write(folder: Path, rows: list[list[str]]) -> None:
    folder.mkdir(parents=True)
    (folder / "news.tsv").write_text(
        "".join(f'{n}\tnews\tnewsus\tTitle {n} "q"\tAbstract\t\t[]\t[]\n' for n in NEWS_IDS), encoding="utf-8"
    )
    (folder / "behaviors.tsv").write_text("".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    (folder / "entity_embedding.vec").write_text("Q1\t0.1\t0.2\t\n", encoding="utf-8")


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    _write(tmp_path / "data" / "train", TRAIN)
    _write(tmp_path / "data" / "valid", VALID)
    return tmp_path / "data"


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    """Vectors for every news but N7 and N8."""
    ids = NEWS_IDS[:6]
    meta = new_meta(
        {
            "kind": "news",
            "provider": "hashing",
            "model": "test",
            "dimension": 4,
            "template": "{title}",
            "normalized": True,
        }
    )
    commit(tmp_path / "store", ids, np.ones((len(ids), 4), dtype=np.float32), meta)
    return tmp_path / "store"


def _ids(out: Path, split: str) -> list[int]:
    return load_dataset(out).splits[split].impression_ids.tolist()


def test_no_rules_copies_everything(data: Path, tmp_path: Path) -> None:
    result = filter_dataset(data, tmp_path / "out", FilterSettings())
    assert result.kept == {"train": 5, "valid": 2} and result.counts == []
    for split in ("train", "valid"):
        for name in ("news.tsv", "behaviors.tsv", "entity_embedding.vec"):  # lines written back unchanged
            assert (tmp_path / "out" / split / name).read_bytes() == (data / split / name).read_bytes()


def test_embeddings_on_candidates_drop_whole_impressions(data: Path, store: Path, tmp_path: Path) -> None:
    ids = set(NEWS_IDS[:6])
    settings = FilterSettings(require_on="candidates")
    result = filter_dataset(data, tmp_path / "out", settings, embedded_ids=ids)
    assert _ids(tmp_path / "out", "train") == [1, 2, 3, 4, 5]  # histories are not looked at
    assert _ids(tmp_path / "out", "valid") == [1]  # N8 is a candidate of valid impression 2
    (rule,) = [c for c in result.counts if c.split == "valid"]
    assert (rule.before, rule.dropped, rule.kept) == (2, 1, 1)


def test_embeddings_on_history_drop_ids(data: Path, tmp_path: Path) -> None:
    settings = FilterSettings(require_on="history")
    result = filter_dataset(data, tmp_path / "out", settings, embedded_ids=set(NEWS_IDS[:6]))
    ds = load_dataset(tmp_path / "out")
    train = ds.splits["train"]
    assert train.impression_ids.tolist() == [1, 2, 3, 4, 5]
    assert [ds.news_vocab.ids[i] for i in train.history_of(2)] == ["N1"]  # N7 removed
    assert train.history_lengths.tolist() == [3, 1, 1, 0, 0]  # impression 5 lost its whole history
    assert result.history_ids_removed == {"train": 3, "valid": 0}
    line = (tmp_path / "out" / "train" / "behaviors.tsv").read_text().splitlines()[4]
    assert line == "5\tU4\t11/14/2019 1:00:00 PM\t\tN4-0 N5-1"


def test_embeddings_on_history_drop_impressions(data: Path, tmp_path: Path) -> None:
    settings = FilterSettings(require_on="history", history_missing="drop-impression")
    filter_dataset(data, tmp_path / "out", settings, embedded_ids=set(NEWS_IDS[:6]))
    assert _ids(tmp_path / "out", "train") == [1, 2, 4]


def test_min_history_counts_after_dropped_ids(data: Path, tmp_path: Path) -> None:
    settings = FilterSettings(require_on="both", min_history=1)
    result = filter_dataset(data, tmp_path / "out", settings, embedded_ids=set(NEWS_IDS[:6]))
    assert _ids(tmp_path / "out", "train") == [1, 2, 3]
    rules = [(c.rule, c.split, c.dropped) for c in result.counts]
    assert ("vectors for every candidate", "valid", 1) in rules
    assert ("history >= 1", "train", 2) in rules


def test_dates_are_inclusive_days(data: Path, tmp_path: Path) -> None:
    from datetime import date

    filter_dataset(
        data, tmp_path / "out", FilterSettings(), date_from=date(2019, 11, 14), date_to=date(2019, 11, 14)
    )
    assert _ids(tmp_path / "out", "train") == [3, 4, 5]
    assert _ids(tmp_path / "out", "valid") == []


def test_users_sample_is_seeded_and_spans_splits(data: Path, tmp_path: Path) -> None:
    picks = []
    for k in range(3):
        out = tmp_path / f"out{k}"
        filter_dataset(data, out, FilterSettings(users_sample=2, seed=7 if k < 2 else 8))
        ds = load_dataset(out)
        users = {ds.user_vocab.ids[u] for imps in ds.splits.values() for u in imps.users}
        assert len(users) == 2
        picks.append(users)
    assert picks[0] == picks[1]
    # a sampled user keeps all their impressions, in every split
    ds = load_dataset(tmp_path / "out0")
    full = load_dataset(data)
    for split, imps in full.splits.items():
        kept = [full.user_vocab.ids[u] for u in imps.users if full.user_vocab.ids[u] in picks[0]]
        assert [ds.user_vocab.ids[u] for u in ds.splits[split].users] == kept


def test_command_table_and_json(data: Path, store: Path, tmp_path: Path) -> None:
    args = [
        "filter",
        str(data),
        "--out",
        str(tmp_path / "out"),
        "--require-embeddings",
        str(store),
        "--min-history",
        "1",
    ]
    table = runner.invoke(app, args, env={"COLUMNS": "160"})
    assert table.exit_code == 0, table.output
    assert "vectors for every candidate" in table.stdout and "history IDs removed" in table.stdout
    again = runner.invoke(app, [*args, "--force", "--json"])
    assert again.exit_code == 0, again.output
    report = json.loads(again.stdout)
    assert report["kept"] == {"train": 3, "valid": 1}


def test_command_errors(data: Path, tmp_path: Path) -> None:
    bad_date = runner.invoke(app, ["filter", str(data), "--out", str(tmp_path / "o"), "--from", "11/14/2019"])
    assert bad_date.exit_code == 1 and "--from '11/14/2019' is not a date like 2019-11-14" in bad_date.stderr
    not_store = runner.invoke(
        app, ["filter", str(data), "--out", str(tmp_path / "o"), "--require-embeddings", str(tmp_path)]
    )
    assert not_store.exit_code == 1 and "not an embedding store" in not_store.stderr
    bad_rule = runner.invoke(
        app, ["filter", str(data), "--out", str(tmp_path / "o"), "--require-on", "titles"]
    )
    assert bad_rule.exit_code == 2 and "filter.require_on = 'titles'" in bad_rule.stderr
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    exists = runner.invoke(app, ["filter", str(data), "--out", str(tmp_path / "full")])
    assert exists.exit_code == 1 and "pass --force" in exists.stderr
    inside = runner.invoke(app, ["filter", str(data), "--out", str(data / "sub")])
    assert inside.exit_code == 1 and "must not be the dataset or inside it" in inside.stderr
