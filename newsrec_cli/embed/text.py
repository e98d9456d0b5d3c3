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
from pathlib import Path

from newsrec_cli.embed.store import EmbeddingStore, TextCheck, compare_texts
from newsrec_cli.errors import InputError, SettingsError
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
        text, fallback = _text_of(table, row, template, used)
        texts.append(text)
        if fallback:
            fallback_ids.append(news_id)
    return NewsTexts(ids=list(table.ids), texts=texts, fallback_ids=fallback_ids)


def texts_of(table: NewsTable, template: str, ids: Sequence[str]) -> list[str]:
    """The texts `news_texts` gives the news `ids` (each must be in `table`), fallbacks included."""
    used = template_fields(template)
    return [_text_of(table, table.index[id_], template, used)[0] for id_ in ids]


def _text_of(table: NewsTable, row: int, template: str, used: list[str]) -> tuple[str, bool]:
    """The text of one row, and whether it is a fallback (every field of the template empty)."""
    values = {
        "title": table.title[row].strip(),
        "abstract": table.abstract[row].strip(),
        "category": table.category[row].strip(),
        "subcategory": table.subcategory[row].strip(),
        "entities": entity_labels(table.entities_of(row)) if "entities" in used else "",
    }
    if any(values[name] for name in used):
        return render(template, values), False
    category = f"{values['category']} {values['subcategory']}".strip()
    return values["title"] or category or table.ids[row], True


def check_store_texts(
    store: EmbeddingStore, news: NewsTable, news_ids: Sequence[str], *, data: Path | str
) -> TextCheck:
    """Check that the store's vectors of `news_ids` were made from the texts `news` gives them.

    The store records a fingerprint of each embedded text; a news ID whose text in `data` differs
    (another dataset reusing the ID, an edited news.tsv) is an InputError with the count and the
    first IDs. Returns the TextCheck; news the store holds no fingerprint for (a store made before
    fingerprints, imported vectors) are counted as unverified.
    """
    ids = [id_ for id_ in news_ids if id_ in news.index and store.has(id_)]
    template = store.meta.get("template")
    if store.hashes is None or not isinstance(template, str):
        return TextCheck(checked=0, changed=[], unverified=len(ids))
    try:
        template_fields(template)
    except SettingsError:  # an imported store's free-text template: nothing to render
        return TextCheck(checked=0, changed=[], unverified=len(ids))
    check = compare_texts(store, ids, texts_of(news, template, ids))
    if check.changed:
        first = ", ".join(check.changed[:5]) + (", ..." if len(check.changed) > 5 else "")
        # Never advise embedding into this store: the IDs may be another dataset's, whose vectors
        # it would overwrite. A new folder leaves them as they are.
        made_with = " ".join(str(store.meta.get(k)) for k in ("provider", "model") if store.meta.get(k))
        raise InputError(
            f"{len(check.changed):,} of {check.checked:,} news have another text in {data} than the one "
            f"their vector was made from (first: {first}): the store was made from another dataset "
            f"(or an earlier news.tsv); embed {data} into a new folder, which leaves this store as it "
            f"is: newsrec embed {data} --out {new_store_folder(store.path, data)}"
            + (f" (with the store's provider and model: {made_with})" if made_with else ""),
            path=store.path,
        )
    return check


def new_store_folder(store: Path, data: Path | str) -> Path:
    """A folder beside `store`, named after it and the dataset, that does not exist yet."""
    base = f"{store.name}-{Path(data).resolve().name or 'data'}"
    candidate, n = store.with_name(base), 2
    while candidate.exists():
        candidate, n = store.with_name(f"{base}-{n}"), n + 1
    return candidate
