"""Checkpoints: written atomically, read with `weights_only=True` (never unpickling code).

A checkpoint is a dict of tensors and plain values (numbers, strings, lists, dicts), including
the settings the run was trained with, so it describes itself.

Equal content gives equal bytes (a resumed run's model.pt has the uninterrupted run's SHA-256):
pickle writes a second reference to the same object as a back-reference, so two payloads with
equal values but other sharing (a settings string shared by two fields in one run, two separate
strings after a resume read them from config.json) pickle differently. `save` rebuilds the plain
values without sharing first. The rest of the file follows from the bytes of the pickle and the
tensors: torch derives `.data/serialization_id` from them and writes no time stamps.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from newsrec_cli import atomic
from newsrec_cli.errors import InputError


def save(path: Path, payload: dict[str, Any], before_replace: Callable[[], None] | None = None) -> None:
    """Write to a temporary file, then rename: an interrupted save leaves the old file intact.

    `before_replace` runs between the two (test fault injection: a kill during the write)."""
    with atomic.atomic_handle(path) as handle:
        torch.save(unshared(payload), handle)
        if before_replace is not None:
            before_replace()


def unshared(value: Any) -> Any:
    """`value` with its plain containers and strings rebuilt, none shared, tensors and other
    objects as they are (a state dict's own layout is already the same for the same model)."""
    kind = type(value)
    if kind is dict:
        return {unshared(k): unshared(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        return kind(unshared(v) for v in value)
    if kind is str:  # a new object (the interpreter's one-character and empty singletons aside)
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "surrogatepass")
    return value


def load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint's dict; InputError if missing or not a safe checkpoint."""
    if not path.is_file():
        raise InputError("checkpoint not found", path=path)
    try:
        with warnings.catch_warnings():
            # A file not written by torch.save (a tampered one, say) draws torch's note on its pickle
            # protocol before the refusal below: the user reads newsrec's line, not torch's.
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        # torch's own message goes on to suggest weights_only=False, i.e. running the file's code
        raise InputError(
            "refused: the file holds code or objects that are not tensors or plain values "
            "(tampered with, or not written by newsrec); it was not loaded",
            path=path,
        ) from None
    except Exception as exc:  # torch raises many types for a bad file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"not a readable checkpoint ({reason})", path=path) from None
    if not isinstance(payload, dict) or "model" not in payload:
        raise InputError("not a newsrec checkpoint (no model weights)", path=path)
    return payload
