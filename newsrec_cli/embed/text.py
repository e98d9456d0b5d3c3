"""The text embedded for each news item: a template over its fields, with a defined fallback.

Fields: `{title}`, `{abstract}`, `{category}`, `{subcategory}`, `{entities}` (the labels of the
title and abstract entities, comma-separated, each once). Separators left dangling by an empty
field are trimmed. A news item whose fields in the template are all empty gets its title, else
"category subcategory", else its news ID, and is counted as a fallback.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

from newsrec_cli.errors import SettingsError
from newsrec_cli.mind.entities import Entity
from newsrec_cli.mind.news import NewsTable

FIELDS = ("title", "abstract", "category", "subcategory", "entities")
_SPACES = re.compile(r"\s+")


@dataclass
class NewsTexts:
    """One text per news ID, in table order, and which IDs got the fallback."""

    ids: list[str]
    texts: list[str]
    fallback_ids: list[str]

    def __len__(self) -> int:
        return len(self.ids)


def template_fields(template: str) -> list[str]:
    """The fields a template uses; SettingsError for unknown fields or a malformed template."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise SettingsError(f"embed.template = {template!r}: {exc}") from None
    used = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in FIELDS or spec or conversion:
            raise SettingsError(
                f"embed.template = {template!r}: unknown field {{{name}}}; allowed: "
                + ", ".join("{" + f + "}" for f in FIELDS)
            )
        used.append(name)
    if not used:
        raise SettingsError(f"embed.template = {template!r}: uses no field; allowed: {', '.join(FIELDS)}")
    return used


def entity_labels(entities: Sequence[Entity]) -> str:
    labels = dict.fromkeys(e.label.strip() for e in entities if e.label.strip())
    return ", ".join(labels)


def render(template: str, values: dict[str, str]) -> str:
    """Fill the template, squeeze whitespace and trim separators an empty field left at the ends."""
    text = _SPACES.sub(" ", template.format_map(values)).strip()
    literal = "".join(part for part, *_ in string.Formatter().parse(template))
    trim = "".join(sorted({c for c in literal if not c.isalnum() and not c.isspace()})) + " "
    return text.strip(trim)


def news_texts(table: NewsTable, template: str) -> NewsTexts:
    """The text of every news row of `table`."""
    used = template_fields(template)
    texts, fallback_ids = [], []
    for row, news_id in enumerate(table.ids):
        values = {
            "title": table.title[row].strip(),
            "abstract": table.abstract[row].strip(),
            "category": table.category[row].strip(),
            "subcategory": table.subcategory[row].strip(),
            "entities": entity_labels(table.entities_of(row)) if "entities" in used else "",
        }
        if any(values[name] for name in used):
            texts.append(render(template, values))
            continue
        fallback_ids.append(news_id)
        category = f"{values['category']} {values['subcategory']}".strip()
        texts.append(values["title"] or category or news_id)
    return NewsTexts(ids=list(table.ids), texts=texts, fallback_ids=fallback_ids)
