"""Parse once: the behaviors cache is written on first read, memory-mapped later, and never stale."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from newsrec_cli.cli import app
from newsrec_cli.errors import InputError
from newsrec_cli.mind import cache as cache_module
from newsrec_cli.mind.cache import ARRAYS, FOLDER
from newsrec_cli.mind.dataset import load_dataset

NEWS = "".join(f"N{i}\tsports\tgolf\tTitle {i}\tAbstract\thttps://x/{i}\t[]\t[]\n" for i in range(1, 7))
# train mentions N99 (no news.tsv row) and users U1, U2; valid adds U3 and N98, and repeats U1.
TRAIN = (
    "1\tU1\t11/15/2019 8:00:00 AM\tN1 N2\tN3-1 N4-0 N99-0\n"
    "2\tU2\t11/15/2019 9:00:00 AM\t\tN5-0 N6-1\n"
    "3\tU1\t11/16/2019 9:00:00 AM\tN1 N2 N3\tN4-1 N5-0\n"
)
VALID = "7\tU3\t11/17/2019 8:00:00 AM\tN98\tN1-0 N2-1\n8\tU1\t11/17/2019 9:00:00 AM\tN1\tN98-1 N6-0\n"


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv(cache_module.ENV, raising=False)  # the default place: beside the data
    for split, behaviors in (("train", TRAIN), ("valid", VALID)):
        (tmp_path / split).mkdir()
        (tmp_path / split / "news.tsv").write_text(NEWS)
        (tmp_path / split / "behaviors.tsv").write_text(behaviors)
    return tmp_path


def _same(a, b) -> None:
    assert a.news_vocab.ids == b.news_vocab.ids
    assert a.user_vocab.ids == b.user_vocab.ids
    for split in a.splits:
        for name in ARRAYS:
            x, y = getattr(a.splits[split], name), getattr(b.splits[split], name)
            assert x.dtype == y.dtype, (split, name)
            assert np.array_equal(x, y), (split, name)


def test_first_read_writes_later_reads_map(data: Path) -> None:
    plain = load_dataset(data, cache=False)
    first = load_dataset(data)
    assert {s: i.hit for s, i in first.caches.items()} == {"train": False, "valid": False}
    assert (data / "train" / FOLDER).is_dir()
    second = load_dataset(data)
    assert {s: i.hit for s, i in second.caches.items()} == {"train": True, "valid": True}
    _same(plain, first)
    _same(plain, second)
    # memory-mapped, read-only: nothing was copied into the heap
    train = second.splits["train"]
    assert isinstance(train.candidates.base, np.memmap)
    assert not train.candidates.flags.writeable
    # the unknown news and the users were mapped onto the shared vocabularies as a parse does
    assert second.news_vocab.ids[-2:] == ["N99", "N98"]
    assert second.user_vocab.ids == ["<pad>", "U1", "U2", "U3"]
    assert second.splits["valid"].users.tolist() == [3, 1]
    assert second.news_vocab.ids[second.splits["valid"].candidates[2]] == "N98"


def test_changed_source_is_parsed_again(data: Path) -> None:
    load_dataset(data)
    first_folder = load_dataset(data).caches["train"].folder
    path = data / "train" / "behaviors.tsv"
    path.write_text(TRAIN.replace("N3-1 N4-0", "N3-0 N4-1"))
    again = load_dataset(data)
    assert not again.caches["train"].hit and again.caches["valid"].hit
    assert again.splits["train"].labels[:2].tolist() == [0, 1]
    assert not first_folder.exists()  # the stale cache was replaced, not kept beside
    # the key is the bytes, not the mtime: a touched file with the same bytes still hits
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert load_dataset(data).caches["train"].hit


def test_edit_in_the_middle_with_the_mtime_restored_is_parsed_again(data: Path) -> None:
    """Issue 30 §1: one label changed outside the first and last MiB, mtime restored (`touch -r`).

    A key of size, mtime and the two ends of the file called that cache verified and kept the
    old click count with exit 0; the whole-file hash sees the change.
    """
    path = data / "train" / "behaviors.tsv"
    history = " ".join(f"N{1 + i % 6}" for i in range(250))  # ~800 bytes a line: 3,000 lines > 2 MiB
    lines = [f"{i}\tU{i % 50}\t11/15/2019 8:00:00 AM\t{history}\tN1-1 N2-0 N3-0\n" for i in range(1, 3001)]
    path.write_text("".join(lines))
    assert path.stat().st_size > 2 * 2**20 + 100_000
    before = load_dataset(data)
    assert int((before.splits["train"].labels == 1).sum()) == 3000
    assert load_dataset(data).caches["train"].hit

    stat = path.stat()
    middle = 1500
    lines[middle] = lines[middle].replace("N2-0", "N2-1")
    path.write_text("".join(lines))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns

    after = load_dataset(data)
    assert not after.caches["train"].hit
    assert int((after.splits["train"].labels == 1).sum()) == 3001
    result = CliRunner().invoke(app, ["data", "prepare", str(data), "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["split"]: r["status"] for r in json.loads(result.stdout)["splits"]}
    assert rows["train"].startswith("cached already")  # the new bytes' cache, written just above
    assert int((load_dataset(data).splits["train"].labels == 1).sum()) == 3001


def test_other_news_list_is_another_key(data: Path) -> None:
    load_dataset(data)
    for split in ("train", "valid"):
        (data / split / "news.tsv").write_text(NEWS + "N7\tsports\tgolf\tT\tA\thttps://x/7\t[]\t[]\n")
    again = load_dataset(data)
    assert not again.caches["train"].hit
    _same(load_dataset(data, cache=False), again)


def test_bad_line_errors_as_before_and_no_cache(data: Path) -> None:
    path = data / "train" / "behaviors.tsv"
    path.write_text(TRAIN + "4\tU4\tnot a time\tN1\tN2-1 N3-0\n")
    with pytest.raises(InputError) as plain:
        load_dataset(data, cache=False)
    with pytest.raises(InputError) as cached:
        load_dataset(data)
    assert str(cached.value) == str(plain.value)
    assert "behaviors.tsv:4, field Time" in str(plain.value)
    # skip mode caches the good lines and the report; error mode still fails on the same line
    skipped = load_dataset(data, on_bad_lines="skip")
    assert len(skipped.splits["train"]) == 3
    hit = load_dataset(data, on_bad_lines="skip")
    assert hit.caches["train"].hit
    assert [b.line for r in hit.reports for b in r.skipped] == [4]
    with pytest.raises(InputError) as again:
        load_dataset(data)
    assert str(again.value) == str(plain.value)


def test_interrupted_write_leaves_no_cache(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    saved: list[str] = []
    real_save = np.save

    def save_then_stop(file, array, **kwargs):
        if saved:
            raise KeyboardInterrupt
        saved.append(str(file))
        real_save(file, array, **kwargs)

    monkeypatch.setattr(cache_module.np, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        load_dataset(data)
    assert saved and list((data / "train" / FOLDER).iterdir()) == []
    monkeypatch.setattr(cache_module.np, "save", real_save)
    assert not load_dataset(data).caches["train"].hit
    assert load_dataset(data).caches["train"].hit


def test_env_chooses_the_folder_or_turns_it_off(data: Path, tmp_path_factory, monkeypatch) -> None:
    elsewhere = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv(cache_module.ENV, str(elsewhere))
    first = load_dataset(data)
    assert first.caches["train"].folder.is_relative_to(elsewhere)
    assert not (data / "train" / FOLDER).exists()
    assert load_dataset(data).caches["train"].hit
    monkeypatch.setenv(cache_module.ENV, "off")
    assert load_dataset(data).caches == {}


def test_read_only_folder_falls_back_to_the_user_cache(data: Path, tmp_path_factory, monkeypatch) -> None:
    home = tmp_path_factory.mktemp("xdg")
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    for split in ("train", "valid"):
        os.chmod(data / split, 0o555)
    try:
        if os.access(data / "train", os.W_OK):
            # root writes anyway: let the cache see the folder as read-only, as any other user would
            monkeypatch.setattr(cache_module, "_writable", lambda folder: False)
        dataset = load_dataset(data)
        assert dataset.caches["train"].folder.is_relative_to(home / "newsrec")
        assert load_dataset(data).caches["train"].hit
    finally:
        for split in ("train", "valid"):
            os.chmod(data / split, 0o755)


def test_prepare_command(data: Path) -> None:
    runner = CliRunner()
    first = runner.invoke(app, ["data", "prepare", str(data), "--json"])
    assert first.exit_code == 0, first.output
    rows = {r["split"]: r for r in json.loads(first.stdout)["splits"]}
    assert rows["train"]["status"] == "parsed and written"
    assert rows["train"]["impressions"] == 3 and rows["train"]["candidates"] == 7
    assert rows["valid"]["bytes"] > 0
    second = runner.invoke(app, ["data", "prepare", str(data)])
    assert second.exit_code == 0, second.output
    assert "cached already" in second.stdout
    bad = runner.invoke(app, ["data", "prepare", str(data / "nope")])
    assert bad.exit_code != 0 and "not found" in bad.output


def _rewrite(folder: Path, name: str, array: np.ndarray) -> None:
    """Replace a cached array and record its new checksum, as a consistent but wrong cache would."""
    np.save(folder / name, array, allow_pickle=False)
    meta = json.loads((folder / "meta.json").read_text())
    meta["files"][name] = {
        "bytes": (folder / name).stat().st_size,
        "xxh3_128": cache_module.file_checksum(folder / name),
    }
    (folder / "meta.json").write_text(json.dumps(meta))


def _roll_labels(folder: Path) -> None:
    np.save(folder / "labels.npy", np.roll(np.load(folder / "labels.npy"), 1), allow_pickle=False)


def _truncate(folder: Path) -> None:
    path = folder / "candidates.npy"
    path.write_bytes(path.read_bytes()[:100])


DAMAGE = {
    "labels rolled": (_roll_labels, "labels.npy does not match its checksum"),
    "truncated": (_truncate, "candidates.npy has 100 bytes"),
    "manifest garbage": (lambda f: (f / "meta.json").write_text("{"), "meta.json unreadable"),
    "id list gone": (lambda f: (f / "users.txt").unlink(), "users.txt missing"),
    "news index out of range": (
        lambda f: _rewrite(f, "candidates.npy", np.load(f / "candidates.npy") + 1000),
        "candidates.npy has an index outside 1..7",
    ),
    "offsets past the end": (
        lambda f: _rewrite(f, "history_offsets.npy", np.load(f / "history_offsets.npy") * 2),
        "history_offsets.npy is not a run of offsets",
    ),
    "label out of range": (
        lambda f: _rewrite(f, "labels.npy", np.load(f / "labels.npy") * 3),
        "labels.npy has a label other than -1, 0 and 1",
    ),
    "wrong type": (
        lambda f: _rewrite(f, "users.npy", np.load(f / "users.npy").astype(np.float64)),
        "users.npy holds float64",
    ),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_damaged_cache_is_parsed_again_with_one_warning(data: Path, kind: str) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["data", "prepare", str(data)]).exit_code == 0
    folder = load_dataset(data).caches["train"].folder
    damage, reason = DAMAGE[kind]
    damage(folder)
    result = runner.invoke(app, ["data", "prepare", str(data), "--json"])
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith(f"warning: the cache {folder} is damaged ({reason}")
    assert result.stderr.strip().endswith(f"): parsing {data / 'train' / 'behaviors.tsv'} again")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
    rows = {r["split"]: r["status"] for r in json.loads(result.stdout)["splits"]}
    assert rows == {
        "train": "damaged: parsed again and written",
        "valid": "cached already (whole source hashed, cache checksums verified)",
    }
    # the rewritten cache is whole again and gives what a parse gives
    again = load_dataset(data)
    assert again.caches["train"].hit
    _same(load_dataset(data, cache=False), again)


def test_evaluate_on_a_damaged_cache_gives_the_parsed_numbers(data: Path) -> None:
    runner = CliRunner()
    args = ["evaluate", "--data", str(data), "--baselines", "--metrics", "auc,mrr", "--json"]
    clean = runner.invoke(app, args)
    assert clean.exit_code == 0, clean.output
    _roll_labels(load_dataset(data).caches["valid"].folder)
    damaged = runner.invoke(app, args)
    assert damaged.exit_code == 0, damaged.output
    values = [(r["name"], r["values"]) for r in json.loads(damaged.stdout)["rows"]]
    assert values == [(r["name"], r["values"]) for r in json.loads(clean.stdout)["rows"]]
    assert "is damaged (labels.npy does not match its checksum)" in damaged.stderr
