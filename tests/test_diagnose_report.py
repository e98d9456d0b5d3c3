"""The diagnosis framework and its numbers: verdicts, exit codes, saturation maths, formatting."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from newsrec_cli.commands.diagnose import format_cell
from newsrec_cli.diagnose.cosine import TEMPERATURES, best_scale, within_spread
from newsrec_cli.diagnose.gradients import chance_loss, diagnose_gradients, module_of
from newsrec_cli.diagnose.report import Check, Report, Status, Table
from newsrec_cli.diagnose.saturation import softmax_peaks
from newsrec_cli.diagnose.stats import SATURATION_LOGIT, saturation, sigmoid, summary


def _report(*statuses: Status) -> Report:
    report = Report("t")
    for i, status in enumerate(statuses):
        report.checks.append(Check(f"c{i}", status, i, f"message {i}", f"fix {i}" if status else ""))
    return report


@pytest.mark.parametrize(
    ("statuses", "verdict", "code"),
    [
        ((), Status.OK, 0),
        ((Status.OK, Status.OK), Status.OK, 0),
        ((Status.OK, Status.WARN), Status.WARN, 0),
        ((Status.WARN, Status.FAIL, Status.OK), Status.FAIL, 1),
    ],
)
def test_verdict_is_the_worst_status_and_fail_exits_1(statuses, verdict, code) -> None:
    report = _report(*statuses)
    assert report.status == verdict
    assert report.exit_code == code


def test_reasons_are_the_checks_at_the_verdicts_status() -> None:
    report = _report(Status.WARN, Status.FAIL, Status.FAIL, Status.OK)
    assert report.reasons == ["c1: message 1", "c2: message 2"]
    assert _report(Status.OK, Status.OK).reasons == ["2 checks passed"]


def test_a_fix_suggested_by_several_checks_is_listed_once() -> None:
    report = Report("t")
    report.checks += [
        Check("a", Status.FAIL, 1, "m", "normalise"),
        Check("b", Status.WARN, 1, "m", "normalise"),
        Check("c", Status.WARN, 1, "m", "other"),
        Check("d", Status.OK, 1, "m", "ignored"),
    ]
    assert report.fixes == ["a, b: normalise", "c: other"]


def test_to_dict_is_json_with_nan_and_numpy_numbers_made_safe() -> None:
    report = _report(Status.FAIL)
    report.tables.append(Table("t", ["x", "y"], [[np.float32(1.5), float("nan")]]))
    report.values = {"inf": float("inf"), "n": np.int64(3)}
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["verdict"] == "FAIL"
    assert data["tables"][0]["rows"] == [[1.5, "nan"]]
    assert data["values"] == {"inf": "inf", "n": 3}


def test_table_refuses_a_row_of_the_wrong_width() -> None:
    with pytest.raises(ValueError, match="2 cells for 3 columns"):
        Table("t", ["a", "b", "c"]).add(1, 2)


def test_saturation_shares_and_gradient_factor_by_hand() -> None:
    logits = np.array([0.0, 10.0, -10.0, 4.0])
    sat = saturation(logits)
    assert sat["high"] == 0.25 and sat["low"] == 0.25 and sat["saturated"] == 0.5
    p = 1 / (1 + np.exp(-logits))
    assert sat["grad_factor"] == pytest.approx(float(np.mean(p * (1 - p))))
    assert saturation(np.zeros(3))["grad_factor"] == pytest.approx(0.25)


def test_saturation_bound_is_where_the_sigmoid_crosses_099() -> None:
    assert sigmoid(np.array([SATURATION_LOGIT]))[0] == pytest.approx(0.99)
    just_inside = SATURATION_LOGIT - 1e-6
    assert saturation(np.array([just_inside, -just_inside]))["saturated"] == 0.0


def test_sigmoid_is_stable_at_huge_logits() -> None:
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        out = sigmoid(np.array([-1000.0, 1000.0, 113.0]))
    assert out.tolist() == [0.0, 1.0, 1.0]


def test_summary_ignores_non_finite_values_but_counts_them() -> None:
    s = summary(np.array([1.0, 2.0, 3.0, np.nan, np.inf]), (50,))
    assert (s["count"], s["non_finite"], s["min"], s["max"], s["p50"]) == (5, 2, 1.0, 3.0, 2.0)


def test_softmax_peak_per_impression() -> None:
    logits = np.array([0.0, 0.0, 50.0, 0.0, 0.0])  # impression 0: a tie of two; impression 1: one dominates
    peaks = softmax_peaks(logits, np.array([0, 2, 5]))
    assert peaks[0] == pytest.approx(0.5)
    assert peaks[1] == pytest.approx(1.0)


def test_within_spread_is_the_median_std_inside_impressions() -> None:
    cos = np.array([0.1, 0.3, 0.5, 0.5, 0.0, 1.0])
    spread = within_spread(cos, np.array([0, 2, 4, 6]))
    assert spread == pytest.approx(float(np.median([0.1, 0.0, 0.5])))


def test_best_scale_is_the_largest_unsaturated_one() -> None:
    cos = np.full(100, 0.4)  # x10 gives 4.0 (fine), x20 gives 8.0 (saturated)
    assert best_scale(cos) == 10.0
    assert best_scale(np.full(10, 1.0)) == 2.0  # 5 x 1.0 = 5 > 4.6
    assert best_scale(np.full(10, 5.0)) == min(TEMPERATURES)


def test_module_grouping_two_levels_down() -> None:
    assert module_of("news_encoder.text.net.0.weight") == "news_encoder.text"
    assert module_of("scorer.log_scale") == "scorer.log_scale"


def test_gradient_flags_vanishing_exploding_unused_and_missing() -> None:
    norms = [{"a": 1e-9, "b": 5e3, "c": 0.0, "d": None, "e": 0.5}] * 2
    report = diagnose_gradients(norms, [1.0, 0.9], [{"text": 0.97, "id": 0.03}] * 2)
    by_name = {c.name: c for c in report.checks}
    assert by_name["vanishing gradients"].status == Status.FAIL and by_name["vanishing gradients"].value == [
        "a"
    ]
    assert by_name["exploding gradients"].status == Status.FAIL and by_name["exploding gradients"].value == [
        "b"
    ]
    assert by_name["modules without gradient"].value == ["d"]
    assert by_name["fusion weights"].status == Status.WARN and "id" in by_name["fusion weights"].message
    flags = {row[0]: row[-1] for row in report.tables[0].rows}
    assert flags == {"a": "vanishing", "b": "exploding", "c": "unused", "d": "no gradient", "e": "ok"}
    assert report.exit_code == 1


def test_a_nan_loss_fails() -> None:
    report = diagnose_gradients([{"a": 1.0}], [math.nan], [None])
    assert any(c.name == "finite loss" and c.status == Status.FAIL for c in report.checks)


@pytest.mark.parametrize(
    ("value", "percent", "text"),
    [
        (None, False, "-"),
        (1234, False, "1,234"),
        (0.04577, True, "4.58%"),
        (1.0, True, "100.0%"),
        (0.0, True, "0.0%"),
        (3.14159, False, "3.142"),
        (1.5e-15, False, "1.500e-15"),
        (0.0, False, "0"),
        ("x", False, "x"),
        (float("nan"), False, "nan"),
    ],
)
def test_format_cell(value, percent, text) -> None:
    assert format_cell(value, percent) == text


@pytest.mark.parametrize(
    ("loss", "settings", "expected"),
    [
        ("listwise", {}, math.log(5)),
        ("pointwise", {}, math.log(2)),
        ("pointwise", {"pos_weight": 4.0}, math.log(2) * 8 / 5),
        ("focal", {"gamma": 2.0}, 0.25 * math.log(2)),
    ],
)
def test_chance_loss_is_the_loss_of_all_zero_logits(loss, settings, expected) -> None:
    from newsrec_cli.objective.losses import loss_fn
    from newsrec_cli.settings import TrainSettings

    train = TrainSettings(loss=loss, **settings)
    zeros = torch.zeros(3, 1 + train.negatives)
    assert chance_loss(train) == pytest.approx(expected)
    assert chance_loss(train) == pytest.approx(float(loss_fn(train, zeros)), rel=1e-6)


@pytest.mark.parametrize(("first", "status"), [(1.6, Status.OK), (3.0, Status.WARN), (26.0, Status.FAIL)])
def test_a_first_loss_far_above_chance_flags_saturated_scores(first, status) -> None:
    report = diagnose_gradients([{"a": 1.0}], [first], [None], chance=math.log(5))
    assert {c.name: c.status for c in report.checks}["first loss"] == status
