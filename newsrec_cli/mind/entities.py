"""The entity JSON of MIND's TitleEntities / AbstractEntities columns."""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Entity:
    """One Wikidata entity linked in a title or abstract."""

    wikidata_id: str
    label: str
    type: str
    confidence: float
    offsets: tuple[int, ...]
    surface_forms: tuple[str, ...]


def parse_entities(text: str) -> list[Entity]:
    """Parse one entity column; empty text is no entities. Raises ValueError with the reason."""
    text = text.strip()
    if not text or text == "[]":
        return []
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        # json's own message may end in "at" already ("Unterminated string starting at")
        where = "char" if exc.msg.endswith(" at") else "at char"
        raise ValueError(f"entity JSON does not parse ({exc.msg} {where} {exc.pos})") from None
    if not isinstance(items, list):
        raise ValueError("entity JSON must be a list of objects")
    entities = []
    for n, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f"entity {n} is not an object")
        wid = item.get("WikidataId")
        if not isinstance(wid, str) or not wid:
            raise ValueError(f"entity {n} has no WikidataId")
        try:
            confidence = float(item.get("Confidence", 1.0))
            offsets = tuple(int(o) for o in item.get("OccurrenceOffsets") or ())
        except (TypeError, ValueError):
            raise ValueError(
                f"entity {n} ({wid}) has a non-numeric Confidence or OccurrenceOffsets"
            ) from None
        entities.append(
            Entity(
                wikidata_id=wid,
                label=str(item.get("Label") or ""),
                type=str(item.get("Type") or ""),
                confidence=confidence,
                offsets=offsets,
                surface_forms=tuple(str(s) for s in item.get("SurfaceForms") or ()),
            )
        )
    return entities
