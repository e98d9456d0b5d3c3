"""InfoNCE against a hand computation, and the masking of a click's copies elsewhere in the batch."""

from __future__ import annotations

import math

import pytest
import torch

from newsrec_cli.objective.losses import infonce_loss


def test_infonce_equals_the_hand_computation() -> None:
    logits = torch.tensor([[2.0, 0.0, 1.0, -1.0], [0.5, 0.0, 3.0, 1.0]])  # B=2, K=2: clicks at columns 0, 2
    row0 = -math.log(math.exp(1.0) / sum(math.exp(v / 2) for v in [2.0, 0.0, 1.0, -1.0]))
    row1 = -math.log(math.exp(1.5) / sum(math.exp(v / 2) for v in [0.5, 0.0, 3.0, 1.0]))
    assert float(infonce_loss(logits, per_row=2, temperature=2.0)) == pytest.approx((row0 + row1) / 2)


def test_a_clicked_news_is_never_its_own_negative() -> None:
    logits = torch.tensor([[2.0, 0.0, 2.0, -1.0], [2.0, 0.0, 2.0, 1.0]])
    candidates = torch.tensor([[7, 3], [7, 5]])  # both rows clicked news 7
    masked = float(infonce_loss(logits, per_row=2, candidates=candidates))
    row0 = -math.log(math.exp(2.0) / (math.exp(2.0) + math.exp(0.0) + math.exp(-1.0)))
    row1 = -math.log(math.exp(2.0) / (math.exp(2.0) + math.exp(0.0) + math.exp(1.0)))
    assert masked == pytest.approx((row0 + row1) / 2)
    assert float(infonce_loss(logits, per_row=2)) > masked  # unmasked, the copy halves the click's share
