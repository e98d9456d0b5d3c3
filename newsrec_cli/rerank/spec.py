"""What to re-rank with: a method and its weight, from `mmr:0.3`, `calibration:0.5` or `none`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Method = Literal["none", "mmr", "calibration"]
METHODS: tuple[Method, ...] = ("none", "mmr", "calibration")


@dataclass(frozen=True)
class RerankSpec:
    """A re-ranker and its weight λ in [0, 1]: 0 keeps the model's order, 1 is all diversity
    (MMR) or all calibration. `none` ignores λ."""

    method: Method = "none"
    weight: float = 0.0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown re-ranker {self.method!r}; choose one of {', '.join(METHODS)}")
        if not (isinstance(self.weight, int | float) and math.isfinite(self.weight)):
            raise ValueError(f"re-ranker weight {self.weight!r} is not a finite number")
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"re-ranker weight {self.weight} is outside [0, 1]")

    @classmethod
    def parse(cls, text: str) -> RerankSpec:
        """`mmr:0.3`, `calibration:0.5`, `mmr` (λ 0.5) or `none`. Raises ValueError with the reason;
        the caller names the flag or body field."""
        name, sep, value = text.strip().partition(":")
        name = name.strip().lower()
        if name not in METHODS:
            raise ValueError(f"unknown re-ranker {name!r}; choose one of {', '.join(METHODS)} (e.g. mmr:0.3)")
        if name == "none":
            return cls()
        if not sep:
            return cls(name, 0.5)  # type: ignore[arg-type]
        try:
            weight = float(value)
        except ValueError:
            raise ValueError(
                f"re-ranker weight {value.strip()!r} is not a number (e.g. {name}:0.3)"
            ) from None
        return cls(name, weight)  # type: ignore[arg-type]

    @property
    def active(self) -> bool:
        """False when the model's order is kept as it is (no method, or λ = 0)."""
        return self.method != "none" and self.weight > 0.0

    def __str__(self) -> str:
        return "none" if self.method == "none" else f"{self.method}:{self.weight:g}"

    def to_dict(self) -> dict[str, object]:
        return {"method": self.method, "weight": self.weight}
