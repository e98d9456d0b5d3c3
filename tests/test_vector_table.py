"""The export's news-vector table in int8: a scale per row and part, exact zeros, loud errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from newsrec_cli.errors import InputError
from newsrec_cli.serve.vector_table import quantise, read_table, roundtrip, write_table

SIGNATURE = {
    "kind": "model-news",
    "provider": "newsrec-model",
    "model": "m",
    "template": "",
    "normalized": False,
}


def vectors(n: int = 300) -> np.ndarray:
    """A learned part of large components, then a unit text part (components ~0.1), as the model's."""
    rng = np.random.default_rng(0)
    learned = rng.normal(scale=3.0, size=(n, 16))
    text = rng.normal(size=(n, 48))
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    out = np.concatenate([learned, text], axis=1).astype(np.float32)
    out[5, 16:] = 0.0  # a news without a text vector
    return out


def test_each_part_keeps_its_own_resolution_and_zeros_stay_zero(tmp_path: Path) -> None:
    v = vectors()
    parts = [0, 16, 64]
    back = roundtrip(v, "int8", parts)
    codes, scales = quantise(v, parts)
    assert codes.dtype == np.int8 and scales.shape == (len(v), 2)
    for p, (a, b) in enumerate([(0, 16), (16, 64)]):
        step = np.abs(v[:, a:b]).max(axis=1) / 127
        assert np.all(np.abs(back[:, a:b] - v[:, a:b]).max(axis=1) <= step / 2 + 1e-7)
        np.testing.assert_allclose(scales[:, p], step, rtol=1e-6)
    assert not back[5, 16:].any()
    # one scale for the whole row would leave the text part a few levels: 10x the error
    whole = roundtrip(v, "int8", [0, 64])
    assert np.abs(whole[:, 16:] - v[:, 16:]).max() > 10 * np.abs(back[:, 16:] - v[:, 16:]).max()
    write_table(tmp_path / "t", [f"N{i}" for i in range(len(v))], v, SIGNATURE, "int8", parts)
    ids, read, meta = read_table(tmp_path / "t")
    assert ids[:2] == ["N0", "N1"] and meta["dtype"] == "int8" and meta["parts"] == parts
    np.testing.assert_array_equal(read, back)
    assert np.load(tmp_path / "t" / "vectors.npy").dtype == np.int8


def test_a_table_that_does_not_match_its_meta_is_one_error(tmp_path: Path) -> None:
    v = vectors(20)
    write_table(tmp_path / "t", [f"N{i}" for i in range(20)], v, SIGNATURE, "int8", [0, 16, 64])
    np.save(tmp_path / "t" / "scales.npy", np.ones((19, 2), np.float32))
    with pytest.raises(InputError, match="does not match its meta"):
        read_table(tmp_path / "t")
    write_table(tmp_path / "f", [f"N{i}" for i in range(20)], v, SIGNATURE, "float32", [0, 64])
    ids, read, meta = read_table(tmp_path / "f")
    np.testing.assert_array_equal(read, v)
    assert meta["dtype"] == "float32"
