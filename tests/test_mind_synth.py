"""The synthetic dataset: deterministic, MIND-shaped, and content predicts its clicks."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from newsrec_cli.errors import SettingsError
from newsrec_cli.mind import load_dataset, read_vec
from newsrec_cli.mind.stats import dataset_stats
from newsrec_cli.mind.synth import synthesize
from newsrec_cli.mind.validate import exit_code, validate_dataset
from newsrec_cli.settings import SynthSettings

FILES = ("news.tsv", "behaviors.tsv", "entity_embedding.vec")
SMALL = SynthSettings(news=400, users=300, days=4, seed=3)


@pytest.fixture(scope="module")
def default_synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default dataset (3000 news, 2000 users, 7 days): what the demo trains on."""
    out = tmp_path_factory.mktemp("synth")
    synthesize(out, SynthSettings())
    return out


def _bytes(root: Path) -> dict[str, bytes]:
    return {f"{split}/{f}": (root / split / f).read_bytes() for split in ("train", "valid") for f in FILES}


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    synthesize(tmp_path / "a", SMALL)
    synthesize(tmp_path / "b", SMALL)
    synthesize(tmp_path / "c", SMALL.model_copy(update={"seed": 4}))
    a, b, c = _bytes(tmp_path / "a"), _bytes(tmp_path / "b"), _bytes(tmp_path / "c")
    assert a == b
    assert a["train/behaviors.tsv"] != c["train/behaviors.tsv"]
    assert a["train/news.tsv"] != c["train/news.tsv"]


def test_shape_like_mind(default_synth: Path) -> None:
    stats = {s.name: s for s in dataset_stats(default_synth).splits}
    train, valid, total = stats["train"], stats["valid"], stats["all"]
    assert total.news == 3000 and total.users == 2000
    assert 0.035 <= total.click_rate <= 0.045
    assert 25 <= total.candidates_per_impression <= 45
    assert train.days == 6 and valid.days == 1
    assert train.last_time < valid.first_time  # the last day is valid/
    assert total.history_in_news == 1.0 and total.candidates_in_news == 1.0
    assert 0.6 <= total.news_with_entities <= 0.9
    # many short histories, some long
    assert total.history_percentiles["p10"] <= 5 and total.history_percentiles["p90"] >= 25


def test_validate_passes(default_synth: Path) -> None:
    checks = validate_dataset(default_synth)
    assert exit_code(checks) == 0
    assert not [c for c in checks if c.status != "OK"]


def test_entity_json_and_vectors_agree(default_synth: Path) -> None:
    ds = load_dataset(default_synth, behaviors=False)
    news = ds.news
    ids, matrix = read_vec(default_synth / "train" / "entity_embedding.vec")
    assert matrix.shape[1] == 100
    linked = set()
    for row in range(len(news)):
        for column, text in (("title", news.title[row]), ("abstract", news.abstract[row])):
            for e in getattr(news, f"{column}_entities")[row]:
                linked.add(e.wikidata_id)
                # offsets point at the surface form, as in MIND
                assert text[e.offsets[0] : e.offsets[0] + len(e.surface_forms[0])] == e.surface_forms[0]
    valid_ids, _ = read_vec(default_synth / "valid" / "entity_embedding.vec")
    assert linked <= set(ids) | set(valid_ids)


def test_every_impression_has_a_click(default_synth: Path) -> None:
    ds = load_dataset(default_synth)
    for imps in ds.splits.values():
        clicks = np.bincount(imps.candidate_impression, weights=imps.labels == 1, minlength=len(imps))
        assert (clicks >= 1).all()
        assert (clicks < imps.candidate_counts).all()


def test_valid_news_are_mostly_fresh(default_synth: Path) -> None:
    ds = load_dataset(default_synth)
    seen = np.zeros(len(ds.news_vocab), dtype=bool)
    seen[ds.splits["train"].candidates] = True
    assert (~seen[ds.splits["valid"].candidates]).mean() > 0.5


def _auc(scores: np.ndarray, labels: np.ndarray) -> float:
    pos, neg = scores[labels == 1], scores[labels == 0]
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(greater + 0.5 * ties)


STOP = {"the", "and", "for", "that", "what", "means", "ideas", "how", "why", "is", "s", "in", "over"}


def test_content_beats_random_and_popularity(default_synth: Path) -> None:
    """Content-only scorers computed here, from the files: title-word overlap with the history,
    and the history's share of the candidate's subcategory. Both must clearly beat random and
    popularity (clicks in train), on the fresh-news valid day."""
    ds = load_dataset(default_synth)
    news = ds.news
    words = [set(re.findall(r"[a-z][a-z-]+", t.lower())) - STOP for t in news.title]
    train, valid = ds.splits["train"], ds.splits["valid"]
    clicks = np.bincount(train.candidates[train.labels == 1], minlength=len(ds.news_vocab))
    rng = np.random.default_rng(0)
    aucs: dict[str, list[float]] = {"random": [], "popularity": [], "title words": [], "subcategory": []}
    for i in range(len(valid)):
        history = valid.history_of(i) - 1  # vocabulary index i is news row i-1
        cands = valid.candidates_of(i) - 1
        labels = valid.labels_of(i)
        if not len(history):
            continue
        bag = Counter(w for n in history for w in words[n])
        subs = Counter(news.subcategory[n] for n in history)
        scores = {
            "random": rng.random(len(cands)),
            "popularity": clicks[cands + 1].astype(float),
            "title words": np.array([sum(bag[w] for w in words[n]) for n in cands], dtype=float),
            "subcategory": np.array([subs[news.subcategory[n]] for n in cands], dtype=float),
        }
        for name, s in scores.items():
            aucs[name].append(_auc(s, labels))
    mean = {k: float(np.mean(v)) for k, v in aucs.items()}
    assert abs(mean["random"] - 0.5) < 0.03
    assert mean["popularity"] < 0.58
    assert mean["title words"] > max(mean["random"], mean["popularity"]) + 0.04, mean
    assert mean["subcategory"] > max(mean["random"], mean["popularity"]) + 0.10, mean


def test_too_few_news_for_the_days() -> None:
    with pytest.raises(SettingsError, match=r"synth.news = 50: at least 75 news are needed for 10 days"):
        synthesize("/nonexistent", SynthSettings(news=50, days=10))


def _pairs_auc(rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> float:
    """AUC over (click, non-click) pairs of one impression that share a subcategory: what a score
    tells beyond the subcategory, which the category embedding alone already knows."""
    wins = total = 0.0
    for scores, labels, subs in rows:
        pos, neg = labels == 1, labels == 0
        same = subs[pos][:, None] == subs[neg][None, :]
        diff = scores[pos][:, None] - scores[neg][None, :]
        wins += float(((diff > 0) + 0.5 * (diff == 0))[same].sum())
        total += float(same.sum())
    return wins / total


def test_text_and_entities_matter_beyond_the_subcategory(default_synth: Path) -> None:
    """Clicks follow the words of a news item and its entities, not only its subcategory (as in real
    news), so that fusion has a reason to use the text and graph modalities: among candidates of the
    same subcategory, both the history's title words and the history's mean entity vector rank
    clicks above non-clicks."""
    ds = load_dataset(default_synth)
    news = ds.news
    words = [set(re.findall(r"[a-z][a-z-]+", t.lower())) - STOP for t in news.title]
    vec_ids, vec = read_vec(default_synth / "train" / "entity_embedding.vec")
    valid_ids, valid_vec = read_vec(default_synth / "valid" / "entity_embedding.vec")
    table = dict(zip(vec_ids, vec, strict=True)) | dict(zip(valid_ids, valid_vec, strict=True))
    entity_mean = np.zeros((len(news.title), vec.shape[1]))
    for row in range(len(news.title)):
        found = [table[e.wikidata_id] for e in news.title_entities[row] + news.abstract_entities[row]]
        if found:
            entity_mean[row] = np.mean(found, axis=0)
    subcats = np.array(news.subcategory)
    text_rows, entity_rows = [], []
    for imps in ds.splits.values():
        for i in range(len(imps)):
            history = imps.history_of(i) - 1
            cands = imps.candidates_of(i) - 1
            labels = imps.labels_of(i)
            if not len(history):
                continue
            bag = Counter(w for n in history for w in words[n])
            text = np.array([sum(bag[w] for w in words[n]) for n in cands], dtype=float)
            entity = entity_mean[cands] @ entity_mean[history].mean(axis=0)
            text_rows.append((text, labels, subcats[cands]))
            entity_rows.append((entity, labels, subcats[cands]))
    text_auc, entity_auc = _pairs_auc(text_rows), _pairs_auc(entity_rows)
    assert text_auc > 0.56, (text_auc, entity_auc)
    assert entity_auc > 0.65, (text_auc, entity_auc)
