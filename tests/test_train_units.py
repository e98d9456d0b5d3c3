"""Direct tests of the training parts, on hand-made impressions with hand-computed answers:
samples (negatives from the click's own impression, without replacement), an epoch's batches,
the losses, the learning-rate schedule, and history truncation checked from the raw file text,
not from `recent_history` itself."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from train_helpers import news_row, write_mind

from newsrec_cli.mind import load_dataset
from newsrec_cli.model.inputs import recent_history
from newsrec_cli.objective.batching import EpochBatches, plan_epoch
from newsrec_cli.objective.losses import loss_fn
from newsrec_cli.objective.samples import click_samples, sample_negatives
from newsrec_cli.settings import TrainSettings
from newsrec_cli.train.schedule import MIN_RATIO, Plateau, lr_at

# (user, history oldest first, impressions): impression 3 has no unclicked candidate, impression
# 4 has two clicks and only two non-clicks (fewer than K=3: drawn with replacement).
BEHAVIORS = [
    ("U1", "N1 N2 N3 N4 N5 N6", "N10-1 N11-0 N12-0 N13-0 N14-0 N15-0"),
    ("U2", "", "N11-0 N16-1 N17-0 N18-0 N19-0"),
    ("U3", "N7", "N12-1 N13-1"),
    ("U4", "N8 N9", "N14-0 N15-1 N16-0 N17-1"),
]
NEWS = [f"N{i}" for i in range(1, 20)]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):
    folder = write_mind(tmp_path_factory.mktemp("units") / "mind", [news_row(n) for n in NEWS], BEHAVIORS)
    return load_dataset(folder)


def ids(dataset, indices) -> list[str]:
    return [dataset.news_vocab.ids[int(i)] for i in indices]


def non_clicks(row: int) -> set[str]:
    return {c[:-2] for c in BEHAVIORS[row][2].split() if c.endswith("-0")}


# --- samples ------------------------------------------------------------------------------------


def test_one_sample_per_click_with_a_non_click_beside_it(data) -> None:
    imps = data.splits["all"]
    samples = click_samples(imps)
    assert ids(data, samples.positive) == ["N10", "N16", "N15", "N17"]
    assert samples.impression.tolist() == [0, 1, 3, 3]
    assert samples.dropped == 2  # both clicks of impression 3, which has nothing unclicked
    for i in range(len(BEHAVIORS)):
        got = ids(data, samples.negatives[samples.neg_offsets[i] : samples.neg_offsets[i + 1]])
        assert set(got) == non_clicks(i) and len(got) == len(non_clicks(i))


@pytest.mark.parametrize("seed", range(5))
def test_negatives_come_from_the_own_impression_without_replacement(data, seed: int) -> None:
    imps = data.splits["all"]
    samples = click_samples(imps)
    k = 3
    drawn = sample_negatives(samples, k, np.random.default_rng(seed))
    assert drawn.shape == (4, k)
    for s, row in enumerate(samples.impression):
        got = ids(data, drawn[s])
        assert set(got) <= non_clicks(int(row)), (s, got)
        if len(non_clicks(int(row))) >= k:
            assert len(set(got)) == k  # no news twice
    again = sample_negatives(samples, k, np.random.default_rng(seed))
    np.testing.assert_array_equal(drawn, again)


def test_every_non_click_is_drawn_over_many_draws(data) -> None:
    samples = click_samples(data.splits["all"])
    seen = set()
    for seed in range(40):
        seen |= set(ids(data, sample_negatives(samples, 4, np.random.default_rng(seed))[0]))
    assert seen == non_clicks(0)  # five non-clicks, four a draw: each one appears


# --- batches --------------------------------------------------------------------------------------


def test_an_epoch_plan_depends_on_seed_and_epoch_only(data) -> None:
    samples = click_samples(data.splits["all"])
    a, b = plan_epoch(samples, 3, 7, 0), plan_epoch(samples, 3, 7, 0)
    np.testing.assert_array_equal(a.order, b.order)
    np.testing.assert_array_equal(a.negatives, b.negatives)
    assert sorted(a.order.tolist()) == list(range(len(samples)))
    orders = {tuple(plan_epoch(samples, 3, 7, epoch).order.tolist()) for epoch in range(8)}
    assert len(orders) > 1  # epochs are shuffled differently


def test_batches_cover_every_sample_once_click_first(data) -> None:
    imps = data.splits["all"]
    samples = click_samples(imps)
    plan = plan_epoch(samples, 3, 0, 0)
    users = np.array([5, 6, 7, 8])
    batches = EpochBatches(imps, samples, plan, batch_size=3, history=4, user_rows=users)
    assert len(batches) == 2
    parts = [batches[step] for step in range(len(batches))]
    assert [p["candidates"].shape for p in parts] == [(3, 4), (1, 4)]
    candidates = torch.cat([p["candidates"] for p in parts]).numpy()
    order = plan.order
    np.testing.assert_array_equal(candidates[:, 0], samples.positive[order])
    np.testing.assert_array_equal(candidates[:, 1:], plan.negatives[order])
    np.testing.assert_array_equal(
        torch.cat([p["users"] for p in parts]).numpy(), users[samples.impression[order]]
    )
    for row, sample in enumerate(order):
        imp = int(samples.impression[sample])
        assert set(ids(data, candidates[row, 1:])) <= non_clicks(imp)


# --- history truncation, from the file's text ---------------------------------------------------------


@pytest.mark.parametrize("length", [1, 3, 6, 8])
def test_history_is_the_last_clicks_oldest_first_left_aligned(data, length: int) -> None:
    imps = data.splits["all"]
    rows = np.arange(len(BEHAVIORS))
    history, mask = recent_history(imps, rows, length)
    assert history.shape == mask.shape == (len(BEHAVIORS), length)
    for row, (_, text, _) in enumerate(BEHAVIORS):
        expected = text.split()[-length:] if text else []
        assert mask[row].tolist() == [True] * len(expected) + [False] * (length - len(expected))
        assert ids(data, history[row][: len(expected)]) == expected
        assert (history[row][len(expected) :] == 0).all()


def test_training_batches_carry_the_same_truncated_history(data) -> None:
    imps = data.splits["all"]
    samples = click_samples(imps)
    plan = plan_epoch(samples, 2, 0, 0)
    batch = EpochBatches(imps, samples, plan, batch_size=8, history=2)[0]
    for row, sample in enumerate(plan.order):
        text = BEHAVIORS[int(samples.impression[sample])][1]
        expected = text.split()[-2:] if text else []
        got = batch["history"][row][batch["history_mask"][row]].tolist()
        assert ids(data, got) == expected


# --- losses, against hand computations ------------------------------------------------------------------


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_listwise_loss_is_the_softmax_cross_entropy_of_the_click() -> None:
    logits = torch.tensor([[2.0, 0.0, 1.0], [0.5, 0.5, -1.0]])
    expected = [
        -math.log(math.exp(2) / (math.exp(2) + 1 + math.exp(1))),
        -math.log(math.exp(0.5) / (2 * math.exp(0.5) + math.exp(-1))),
    ]
    loss = loss_fn(TrainSettings(loss="listwise"), logits)
    assert float(loss) == pytest.approx(sum(expected) / 2, rel=1e-6)


def test_pointwise_loss_with_and_without_a_click_weight() -> None:
    logits = torch.tensor([[1.0, -1.0, 2.0]])
    terms = [-math.log(sigmoid(1.0)), -math.log(1 - sigmoid(-1.0)), -math.log(1 - sigmoid(2.0))]
    plain = loss_fn(TrainSettings(loss="pointwise", pos_weight=None), logits)
    assert float(plain) == pytest.approx(sum(terms) / 3, rel=1e-6)
    weighted = loss_fn(TrainSettings(loss="pointwise", pos_weight=4.0), logits)
    assert float(weighted) == pytest.approx((4 * terms[0] + terms[1] + terms[2]) / 3, rel=1e-6)


def test_focal_loss_scales_each_term_by_one_minus_p_t_to_the_gamma() -> None:
    logits = torch.tensor([[1.0, -1.0, 2.0]])
    p_t = [sigmoid(1.0), 1 - sigmoid(-1.0), 1 - sigmoid(2.0)]
    expected = sum((1 - p) ** 2 * -math.log(p) for p in p_t) / 3
    loss = loss_fn(TrainSettings(loss="focal", gamma=2.0), logits)
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    as_bce = loss_fn(TrainSettings(loss="focal", gamma=0.0), logits)  # gamma 0 is plain BCE
    assert float(as_bce) == pytest.approx(sum(-math.log(p) for p in p_t) / 3, rel=1e-6)


# --- learning-rate schedule ----------------------------------------------------------------------------


def test_warmup_is_linear_then_cosine_ends_at_the_floor() -> None:
    def lr(step: int, schedule: str = "cosine") -> float:
        return lr_at(step, base_lr=1.0, warmup_steps=4, total_steps=14, schedule=schedule)  # type: ignore[arg-type]

    assert [lr(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lr(4) == pytest.approx(1.0)  # the peak, where the cosine starts
    assert lr(9) == pytest.approx(MIN_RATIO + (1 - MIN_RATIO) * 0.5)  # half way down
    assert lr(14) == pytest.approx(MIN_RATIO) and lr(100) == pytest.approx(MIN_RATIO)
    assert all(lr(s) >= lr(s + 1) for s in range(4, 14))
    assert [lr(s, "constant") for s in (3, 4, 13)] == pytest.approx([1.0, 1.0, 1.0])
    assert lr_at(0, base_lr=2.0, warmup_steps=0, total_steps=10, schedule="cosine") == pytest.approx(2.0)


def test_plateau_halves_after_an_epoch_without_a_better_auc_and_round_trips() -> None:
    plateau = Plateau()
    for auc in (0.60, 0.65, 0.65, 0.64, 0.70):
        plateau.update(auc)
    assert plateau.factor == pytest.approx(0.25) and plateau.best == pytest.approx(0.70)
    copy = Plateau()
    copy.load_state_dict(plateau.state_dict())
    assert (copy.factor, copy.best) == (plateau.factor, plateau.best)


def test_sampling_lives_outside_the_torch_rng(data, tmp_path: Path) -> None:
    # An epoch's plan uses its own generator: the global torch RNG (dropout, init) is untouched.
    state = torch.get_rng_state()
    plan_epoch(click_samples(data.splits["all"]), 3, 0, 0)
    assert torch.equal(state, torch.get_rng_state())
