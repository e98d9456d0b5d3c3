"""The MIND readers on real rows (../shared/data) and on crafted bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from newsrec_cli.errors import InputError
from newsrec_cli.mind import ReadReport, Vocab, load_dataset, read_behaviors, read_news, read_vec

ENT = (
    '[{"Label": "Elizabeth II", "Type": "P", "WikidataId": "Q9682", "Confidence": 0.97, '
    '"OccurrenceOffsets": [4], "SurfaceForms": ["Queen Elizabeth"]}]'
)
NEWS = [
    [
        "N1",
        "lifestyle",
        "lifestyleroyals",
        'The Queen Elizabeth "look"',
        "An abstract.",
        "http://x/1",
        ENT,
        "[]",
    ],
    ["N2", "sports", "football_nfl", "José scores", "", "http://x/2", "[]", "[]"],
    ["N3", "news", "newsworld", "Plain title", "Text", "", "", ""],
]
BEHAVIORS = [
    ["1", "U1", "11/15/2019 8:55:22 AM", "N1 N2", "N2-1 N3-0"],
    ["2", "U2", "11/15/2019 1:05:00 PM", "", "N1-0 N3-1 N2-0"],
]


def write_tsv(path: Path, rows: list[list[str]], *, newline: str = "\n", bom: bool = False) -> Path:
    text = "".join("\t".join(r) + newline for r in rows)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def mind_folder(tmp_path: Path, news=NEWS, behaviors=BEHAVIORS, **kw) -> Path:
    write_tsv(tmp_path / "news.tsv", news, **kw)
    write_tsv(tmp_path / "behaviors.tsv", behaviors, **kw)
    return tmp_path


# --- real rows ------------------------------------------------------------------------------


def test_real_news_rows(shared_data: Path) -> None:
    news = read_news(shared_data / "mind_tiny" / "news.tsv")
    assert len(news) == 500
    row = news.index["N29120"]  # quotes inside a title: no CSV quoting
    assert news.title[row] == 'John Dorsey admits talks with Washington, but it "takes two to tango"'
    assert news.title[news.index["N4147"]] == "José José, Legendary Mexican Singer, Dead at 71"
    assert news.abstract[news.index["N22028"]] == ""
    first = news.index["N55528"]
    labels = {e.label: e for e in news.title_entities[first]}
    queen = labels["Elizabeth II"]
    assert (queen.wikidata_id, queen.type, queen.confidence, queen.offsets) == ("Q9682", "P", 0.97, (11,))
    assert queen.surface_forms == ("Queen Elizabeth",)
    # the offset points at the surface form in the title, as MIND defines it
    assert news.title[first][11 : 11 + len("Queen Elizabeth")] == "Queen Elizabeth"
    assert sum(len(e) for e in news.title_entities) == 449
    assert sum(len(e) for e in news.abstract_entities) == 625


def test_real_behaviors_llm4rec(shared_data: Path) -> None:
    ds = load_dataset(shared_data / "llm4rec_mind")
    imps = ds.splits["all"]
    assert len(imps) == 1788
    assert ds.user_vocab.ids[imps.users[0]] == "U_imp58285"
    assert [ds.news_vocab.ids[i] for i in imps.history_of(0)] == ["N16636", "N35813"]
    cands = imps.candidates_of(0)
    assert len(cands) == 16
    assert ds.news_vocab.ids[cands[imps.labels_of(0) == 1][0]] == "N23336"
    assert str(imps.times[0]) == "2019-11-15T00:00:00"
    assert ds.in_news(imps.candidates).all() and ds.in_news(imps.history).all()
    # compact form: flat arrays, offsets close over them
    assert imps.candidate_offsets[-1] == len(imps.candidates) == len(imps.labels) == 21_713


def test_real_vec(shared_data: Path) -> None:
    ids, matrix = read_vec(shared_data / "relation_embedding.vec")
    assert matrix.shape == (len(ids), 100) and matrix.dtype == np.float32
    assert ids[0] == "P31" and matrix[0, 0] == pytest.approx(-0.073467)


# --- line endings, BOM, unicode -------------------------------------------------------------


@pytest.mark.parametrize("newline,bom", [("\n", False), ("\r\n", False), ("\r\n", True), ("\n", True)])
def test_crlf_and_bom(tmp_path: Path, newline: str, bom: bool) -> None:
    ds = load_dataset(mind_folder(tmp_path, newline=newline, bom=bom))
    assert ds.news.ids == ["N1", "N2", "N3"]  # no BOM glued to the first ID
    assert ds.news.abstract_entities[0] == []  # no "\r" left in the last column
    imps = ds.splits["all"]
    assert imps.impression_ids.tolist() == [1, 2]
    assert imps.labels.tolist() == [1, 0, 0, 1, 0]
    assert imps.history_lengths.tolist() == [2, 0]


def test_unlabeled_test_behaviors(tmp_path: Path) -> None:
    rows = [["1", "U1", "11/15/2019 8:55:22 AM", "N1", "N2 N3"]]
    imps = read_behaviors(write_tsv(tmp_path / "b.tsv", rows), Vocab(["N1", "N2", "N3"]), Vocab())
    assert imps.labels.tolist() == [-1, -1] and not imps.labeled


# --- crafted bad files: one line naming file, line and field --------------------------------

BAD_NEWS = [
    ("columns", lambda r: r[:7], "field columns: expected 8 tab-separated columns, found 7"),
    (
        "json",
        lambda r: r[:6] + ['[{"Label": "x", "WikidataId": "Q1"', "[]"],
        "field TitleEntities: entity JSON",
    ),
    (
        "no id",
        lambda r: r[:6] + ['[{"Label": "x"}]', "[]"],
        "field TitleEntities: entity 0 has no WikidataId",
    ),
    ("empty id", lambda r: [""] + r[1:], "field NewsID: empty news ID"),
]


@pytest.mark.parametrize("case,mutate,message", BAD_NEWS, ids=[c[0] for c in BAD_NEWS])
def test_bad_news_line(tmp_path: Path, case: str, mutate, message: str) -> None:
    rows = [NEWS[0], mutate(list(NEWS[1])), NEWS[2]]
    path = write_tsv(tmp_path / "news.tsv", rows)
    with pytest.raises(InputError) as err:
        read_news(path)
    assert str(err.value).startswith(f"{path}:2, {message}")
    assert "\n" not in str(err.value)
    table = read_news(path, on_bad_lines="skip")
    assert table.ids == ["N1", "N3"]
    report = table.reports[0]
    assert len(report.skipped) == 1 and report.skipped[0].line == 2
    assert "1 bad line skipped" in report.summary() and f"{path}:2" in report.summary()


def test_duplicate_news_id(tmp_path: Path) -> None:
    path = write_tsv(tmp_path / "news.tsv", NEWS + [NEWS[0]])
    with pytest.raises(InputError, match=r"news.tsv:4, field NewsID: duplicate news ID 'N1'"):
        read_news(path)


def test_bad_entity_json_collected(tmp_path: Path) -> None:
    rows = [NEWS[0], NEWS[1][:6] + ["{broken", "[]"], NEWS[2]]
    table = read_news(write_tsv(tmp_path / "news.tsv", rows), bad_entities="collect")
    assert table.ids == ["N1", "N2", "N3"] and table.title_entities[1] == []
    assert [b.line for b in table.reports[0].bad_entities["TitleEntities"]] == [2]


BAD_BEHAVIORS = [
    ("columns", lambda r: r[:4], "field columns: expected 5 tab-separated columns, found 4"),
    ("label", lambda r: r[:4] + ["N2-2 N3-0"], "field Impressions: candidate 'N2-2'"),
    ("time", lambda r: r[:2] + ["2019-11-15 08:55"] + r[3:], "field Time: not a time like"),
    ("imp id", lambda r: ["x1"] + r[1:], "field ImpressionID: not an integer: 'x1'"),
    ("empty", lambda r: r[:4] + [""], "field Impressions: no candidates"),
    ("duplicate", lambda r: ["1"] + r[1:], "field ImpressionID: duplicate impression ID 1 (first on line 1)"),
]


@pytest.mark.parametrize("case,mutate,message", BAD_BEHAVIORS, ids=[c[0] for c in BAD_BEHAVIORS])
def test_bad_behaviors_line(tmp_path: Path, case: str, mutate, message: str) -> None:
    third = ["3", "U3", "11/16/2019 9:00:00 AM", "N3", "N1-1 N2-0"]
    path = write_tsv(tmp_path / "behaviors.tsv", [BEHAVIORS[0], mutate(list(BEHAVIORS[1])), third])
    news = Vocab(["N1", "N2", "N3"])
    with pytest.raises(InputError) as err:
        read_behaviors(path, news, Vocab())
    assert str(err.value).startswith(f"{path}:2, {message}")
    report = ReadReport(path=str(path))
    imps = read_behaviors(path, news, Vocab(), on_bad_lines="skip", report=report)
    assert imps.impression_ids.tolist() == [1, 3]
    assert [(b.line, b.field) for b in report.skipped] == [(2, message.split(":")[0].removeprefix("field "))]
    # what is kept stays aligned: impression 3's candidates and labels
    assert [news.ids[i] for i in imps.candidates_of(1)] == ["N1", "N2"]
    assert imps.labels_of(1).tolist() == [1, 0]


CUT_LINES = "1\tU1\t11/15/2019 8:55:22 AM\tN1\tN2-1 N3-0\n2\tU2\t11/15/2019 9:00:00 AM\tN2\tN1-0 N3-1 N2"
CUT = [
    ("inside the label", CUT_LINES + "-", "inside the candidate 'N2-'"),
    ("before the label", CUT_LINES, "inside the candidate 'N2' (no -0/-1 label"),
    ("one candidate", CUT_LINES.rsplit("\t", 1)[0] + "\tN1", "inside the candidate 'N1' (no -0/-1 label"),
    ("in the history", CUT_LINES.rsplit("\t", 1)[0], "expected 5 tab-separated columns, found 4"),
]


@pytest.mark.parametrize("case,text,reason", CUT, ids=[c[0] for c in CUT])
def test_truncated_last_line_is_named(tmp_path: Path, case: str, text: str, reason: str) -> None:
    """Issue 30 §8: a file cut inside its last line's impressions was "labelled and unlabeled
    candidates mixed in one file"; it is named as a truncated last line."""
    path = tmp_path / "behaviors.tsv"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        read_behaviors(path, Vocab(["N1", "N2", "N3"]), Vocab())
    message = str(err.value)
    assert message.startswith(
        f"{path}:2, field {'columns' if case == 'in the history' else 'Impressions'}: "
        "the last line looks truncated (the file ends without a line ending): "
    )
    assert reason in message and "mixed" not in message
    report = ReadReport(path=str(path))
    imps = read_behaviors(path, Vocab(["N1", "N2", "N3"]), Vocab(), on_bad_lines="skip", report=report)
    assert imps.impression_ids.tolist() == [1] and [b.line for b in report.skipped] == [2]
    # control: the same line with its line ending is no truncation, and a whole last line is read
    path.write_text(text + "\n")
    with pytest.raises(InputError) as whole:
        read_behaviors(path, Vocab(["N1", "N2", "N3"]), Vocab())
    assert "looks truncated" not in str(whole.value)
    path.write_text(CUT_LINES + "-0")
    assert read_behaviors(path, Vocab(["N1", "N2", "N3"]), Vocab()).labels.tolist() == [1, 0, 0, 1, 0]


def test_truncated_last_line_after_full_chunks(tmp_path: Path) -> None:
    """The cut line alone in its chunk: the labels of earlier chunks show the file is labelled."""
    path = tmp_path / "behaviors.tsv"
    path.write_text(CUT_LINES.replace("N2-1 N3-0", "N2-1").replace("N1-0 N3-1 N2", "N3"))
    with pytest.raises(
        InputError, match=r"behaviors.tsv:2, field Impressions: the last line looks truncated"
    ):
        read_behaviors(path, Vocab(["N1", "N2", "N3"]), Vocab(), chunk_lines=1)
    # an unlabeled test file without a final line ending is whole
    path.write_text("1\tU1\t11/15/2019 8:55:22 AM\tN1\tN2 N3\n2\tU2\t11/15/2019 9:00:00 AM\tN2\tN1")
    assert len(read_behaviors(path, Vocab(["N1", "N2", "N3"]), Vocab(), chunk_lines=1)) == 2


def test_skip_reports_every_bad_line(tmp_path: Path) -> None:
    good = BEHAVIORS[0]
    rows = [good] + [[str(i), "U", "bad time", "", "N1-1"] for i in range(2, 12)]
    path = write_tsv(tmp_path / "behaviors.tsv", rows)
    report = ReadReport(path=str(path))
    imps = read_behaviors(path, Vocab(), Vocab(), on_bad_lines="skip", report=report)
    assert len(imps) == 1 and len(report.skipped) == 10
    summary = report.summary()
    assert summary.startswith("10 bad lines skipped") and summary.count("field Time") == 5  # first five


@pytest.mark.parametrize(
    "line,message",
    [
        ("Q1\t0.1\tnan\t0.3\t", "Q-file.vec:2, field value 2: nan is not a finite number"),
        ("Q1\t0.1\tabc\t0.3\t", "Q-file.vec:2, field value 2: not a number: 'abc'"),
        ("Q1\t0.1\t0.2\t", "Q-file.vec:2, field vector: expected 3 values, found 2"),
        ("Q0\t0.1\t0.2\t0.3\t", "Q-file.vec:2, field ID: duplicate ID 'Q0' (first on line 1)"),
    ],
)
def test_bad_vec(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "Q-file.vec"
    path.write_text("Q0\t0.5\t0.5\t0.5\t\n" + line + "\n", encoding="utf-8")
    with pytest.raises(InputError) as err:
        read_vec(path)
    assert str(err.value) == f"{tmp_path}/{message}"


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "news.tsv"
    path.write_bytes(b"N1\tc\ts\t\xff\xfe title\ta\tu\t[]\t[]\n")
    with pytest.raises(
        InputError, match=r"news.tsv:1: not UTF-8 text \(invalid start byte at byte 8 of the line\)"
    ):
        read_news(path)
