"""`evaluate --retrieve`: the catalogue each impression retrieves from (time, history), hit@k and
recall@k by hand, the model's catalogue scores, the re-rankers' pool rule, and the command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from evaluate_helpers import make_mind, make_store, train_tiny_run
from typer.testing import CliRunner

from newsrec_cli.cli import app
from newsrec_cli.evaluate.beyond import PAD
from newsrec_cli.evaluate.retrieve import Pool, hit_recall, pick, retrieve, split_catalogue
from newsrec_cli.mind import load_dataset
from newsrec_cli.rerank import RerankSpec, pool_size

runner = CliRunner()

# N2 N5 shown at 9:00; N4 N6 at 9:30 and N1 at 9:30 too (another impression, the same second);
# N3 first at 10:00. Impression 21 has read N2, impression 23 has read N1.
TIMED = [
    "20\tU1\t11/15/2019 9:00:00 AM\tN1\tN2-1 N5-0",
    "21\tU2\t11/15/2019 9:30:00 AM\tN2\tN4-0 N6-1",
    "22\tU3\t11/15/2019 9:30:00 AM\t\tN1-1 N2-0",
    "23\tU4\t11/15/2019 10:00:00 AM\tN1\tN3-1 N5-0",
]


@pytest.fixture(scope="module")
def timed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_mind(tmp_path_factory.mktemp("timed"), valid=TIMED)


def _ids(dataset, top: np.ndarray) -> list[list[str]]:  # noqa: ANN001
    return [[dataset.news_vocab.ids[n] for n in row if n != PAD] for row in top]


def test_each_impression_retrieves_what_was_shown_up_to_its_time_minus_its_history(timed: Path) -> None:
    dataset = load_dataset(timed)
    target = dataset.splits["valid"]
    catalogue = split_catalogue(target)
    # a score that puts the higher news number first, for every impression alike
    number = np.asarray([int(dataset.news_vocab.ids[n][1:]) for n in catalogue.news], dtype=np.float32)
    top = retrieve(target, catalogue, lambda rows: np.broadcast_to(number, (len(rows), len(number))), 6)
    assert _ids(dataset, top) == [
        ["N5", "N2"],  # 9:00: only what was shown by then (N3, N4, N6, N1 come later)
        ["N6", "N5", "N4", "N1"],  # 9:30: N1 shown at the same second counts; N2 was read
        ["N6", "N5", "N4", "N2", "N1"],  # no history: nothing excluded
        ["N6", "N5", "N4", "N3", "N2"],  # 10:00: everything but N1, which was read
    ]
    assert (top[0, 2:] == PAD).all()


def test_hit_and_recall_by_hand(timed: Path) -> None:
    target = load_dataset(timed).splits["valid"]
    vocab = target.news_vocab
    n = {name: vocab[name] for name in ("N1", "N2", "N3", "N4", "N5", "N6")}
    top = np.array(
        [
            [n["N5"], n["N2"]],  # the click N2 found: hit 1, recall 1
            [n["N4"], n["N5"]],  # the click N6 missed: 0, 0
            [n["N2"], PAD],  # the click N1 missed
            [n["N3"], n["N6"]],  # found
        ]
    )
    hit, recall = hit_recall(top, target)
    assert hit.tolist() == [1.0, 0.0, 0.0, 1.0]
    assert recall.tolist() == [1.0, 0.0, 0.0, 1.0]
    # two clicks, one found: recall 1/2; an impression without a click is NaN
    two = make_mind(Path(str(timed) + "-two"), valid=["30\tU1\t11/15/2019 9:00:00 AM\t\tN1-1 N2-1 N3-0"])
    target = load_dataset(two).splits["valid"]
    hit, recall = hit_recall(np.array([[target.news_vocab["N2"], target.news_vocab["N3"]]]), target)
    assert (hit.tolist(), recall.tolist()) == ([1.0], [0.5])
    none = make_mind(Path(str(timed) + "-none"), valid=["31\tU1\t11/15/2019 9:00:00 AM\t\tN1-0 N2-0"])
    hit, recall = hit_recall(np.array([[1, 2]]), load_dataset(none).splits["valid"])
    assert np.isnan(hit[0]) and np.isnan(recall[0])


def test_a_reranker_chooses_from_the_pool_serve_uses() -> None:
    # 150 retrievable news: the best 100 are one story, the 120th another. MMR at λ = 1 would take
    # the 120th second if it saw the whole pool; serve's rule shows it only pool_size(10) = 100.
    width, k = 150, 10
    assert pool_size(k) == 100
    vectors = np.zeros((width + 1, 2), dtype=np.float32)
    vectors[1:, 0] = 1.0
    vectors[120, :] = (0.0, 1.0)  # news index 120 sits at pool position 119
    news = np.arange(1, width + 1)[None, :]
    pool = Pool(news=news, scores=-np.arange(width, dtype=np.float32)[None, :])

    class Facts:  # what pick reads
        categories = np.zeros(width + 1, dtype=np.int64)
        missing: dict[str, str] = {}

        def __init__(self) -> None:
            self.vectors = vectors

        def history_distribution(self, offsets: np.ndarray, rows: np.ndarray) -> np.ndarray:
            return np.zeros((len(rows), 1))

    impressions = type("T", (), {"history_offsets": np.zeros(2, dtype=np.int64)})()
    top = pick(pool, impressions, k, RerankSpec("mmr", 1.0), Facts())  # type: ignore[arg-type]
    assert 120 not in top[0]
    assert top[0, 0] == 1  # the best first
    wide = pick(Pool(news[:, 120:], pool.scores[:, 120:]), impressions, k, RerankSpec("mmr", 1.0), Facts())  # type: ignore[arg-type]
    assert wide.shape == (1, k)
    assert pick(pool, impressions, k).tolist() == [list(range(1, k + 1))]  # no re-ranker: the first k


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("retrieve-run")
    data = make_mind(root / "data")
    store = make_store(root / "store")
    return data, train_tiny_run(data, root / "run", store)


def test_catalogue_scores_equal_the_models_candidate_logits(tiny_run: tuple[Path, Path]) -> None:
    from newsrec_cli.evaluate.model_scores import run_scores
    from newsrec_cli.evaluate.retrieve import model_scorer
    from newsrec_cli.runs.loading import load_run

    data, run_dir = tiny_run
    dataset = load_dataset(data)
    known, target = dataset.splits["train"], dataset.splits["valid"]
    run = load_run(run_dir, "cpu")
    logits = run_scores(run, dataset, target, known)
    catalogue = split_catalogue(target)
    scores = model_scorer(run, dataset, target, known, catalogue, "offline")(np.arange(len(target)))
    where = catalogue.positions(len(dataset.news_vocab))
    own = scores[target.candidate_impression, where[target.candidates]]
    np.testing.assert_allclose(own, logits, atol=1e-5)
    assert np.ptp(logits) > 1e-3  # a control: the logits differ, so equal ones mean the same scorer


def test_evaluate_retrieve_command(tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    data, run_dir = tiny_run
    result = runner.invoke(
        app, ["evaluate", str(run_dir), "--data", str(data), "--retrieve", "--out", str(tmp_path), "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ranking"] == "retrieve"
    assert report["metrics"][:4] == ["hit@5", "hit@10", "recall@5", "recall@10"]
    row = report["rows"][0]
    # 6 news, 3 impressions with one click each, histories excluded: with k = 10 every clicked
    # news that was shown by then and not read is retrieved
    assert row["values"]["hit@10"] == pytest.approx(1.0)
    assert "coverage@10" in row["values"]
    assert (tmp_path / "metrics-retrieve.json").exists()


@pytest.mark.parametrize(
    ("extra", "flag"),
    [(["--write-predictions"], "--retrieve"), (["--by", "category"], "--by")],
)
def test_retrieve_refuses_what_ranks_candidates(
    tiny_run: tuple[Path, Path], extra: list[str], flag: str
) -> None:
    data, run_dir = tiny_run
    result = runner.invoke(app, ["evaluate", str(run_dir), "--data", str(data), "--retrieve", *extra])
    assert result.exit_code != 0
    assert flag in result.output and "Traceback" not in result.output


def test_ties_across_the_cut_go_to_the_news_shown_first() -> None:
    from newsrec_cli.evaluate.retrieve import _best

    rng = np.random.default_rng(0)
    scores = np.zeros((50, 300), dtype=np.float32)  # every news ties (e.g. a CTR with no events yet)
    scores[rng.random((50, 300)) < 0.1] = -np.inf  # some not yet shown
    scores[:, 7] = 1.0
    best = _best(scores, 10)
    for row, s in zip(best, scores, strict=True):
        expected = [7, *[p for p in range(300) if p != 7 and np.isfinite(s[p])][:9]]
        assert row.tolist() == expected
