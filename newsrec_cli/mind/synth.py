"""The built-in synthetic MIND dataset: users with latent tastes, news that carry them, clicks that follow.

The generative story, in the order the code runs:

1. Topics: the subcategories of `synth_words` (grouped in categories), each with a share `w_s` of
   the news, and the themes (money, family, weather, ...: angles that cut across topics), each
   with a share `v_t`. Entities (people, organisations, places) belong to one subcategory each and
   have a Zipf popularity inside it and a latent factor `f_e` (4-d, what the knowledge graph knows
   of them: no name or word shows it); their 100-d vectors are the subcategory's centroid plus a
   projection of `f_e` plus noise.
2. News: a subcategory, a theme, 0-2 title entities (+ abstract entities), a title and abstract
   made of the topic's and the theme's real English words around the entity names, a publish day
   (a few days before the log starts, for histories, then every day of it) and a popularity
   `z ~ N(0, 1)`.
3. Users: a taste `theta_u` over subcategories and `phi_u` over themes (sparse Gamma draws, mixed
   with the global shares), three favourite entities drawn from `theta_u`, and a liking `p_u` of
   the entity factors.
4. A user's preference for a news item is
   `a*log(theta_us / w_s) + t*log(phi_ut / v_t) + e*[favourite entity] + k*p_u.mean(f_e)/2`: the
   subcategory, the text's theme and the entities each carry a real share of it, as in real news,
   so that a model needs its category, text and graph inputs alike. The history before the log is
   drawn from the same preference (the best of a few old news, Gumbel-max), plus news of a
   favourite entity: clicked news reveal every part of the taste.
5. Impressions: a few per user (geometric, most users have one or two), a time in the log, and
   ~35 candidates (log-normal) drawn from recent news, mostly published that day. A candidate is
   clicked with probability `sigmoid(preference + b*z + noise + c)`: popularity helps a little,
   and `c` is set by bisection so that about `CLICK_RATE` of candidates are clicked (every
   impression has at least one click, as in MIND). Clicks join the user's history for later
   impressions. The last day is valid/.

Everything is drawn from one seed through independent streams, so the same settings give the
same files byte for byte. Work is vectorised with numpy; only text is composed in Python.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from newsrec_cli import atomic
from newsrec_cli.errors import InputError, SettingsError
from newsrec_cli.mind.synth_words import (
    CATEGORIES,
    FIRST_NAMES,
    LAST_NAMES,
    LIST_NUMBERS,
    PLACES,
    THEMES,
    TIME_WORDS,
)
from newsrec_cli.mind.writer import format_time, require_empty_folder, write_lines
from newsrec_cli.settings import SynthSettings

START = datetime(2019, 11, 9, tzinfo=UTC)  # MIND-small's train log starts on 11/9/2019
PRE_DAYS_SHARE = 0.5  # days of news before the log (for histories), as a share of the log's days
CLICK_RATE = 0.04  # MIND's share of clicked candidates
VEC_DIM = 100  # MIND's entity_embedding.vec dimension
# Click model: logit = TASTE * log(subcategory lift) + THEME * log(theme lift) + ENTITY * [favourite
# entity] + FACTOR * (p_u . mean f_e) / 2 + POPULARITY * z + noise + c. With TASTE alone the
# category embedding explained nearly every click and fusion ignored text and graph; these weights
# give each a share of the preference's variance (about 2 : 1.5 : 1 on the default dataset).
TASTE, THEME, ENTITY, FACTOR, POPULARITY, NOISE = 1.1, 1.3, 1.5, 2.0, 0.8, 0.5
BUZZ_HOURS = 12.0  # width of a news' buzz around its peak (the trending preset)
FACTORS = 4  # size of the entities' latent factor f_e and of the users' liking p_u
HISTORY_POOL = 30  # a history click is the preferred one of this many old news (by exposure)
HISTORY_BY_ENTITY = 0.25
# history clicks follow softmax(HISTORY_SHARPNESS * preference): sharper than impressions, where
# position, mood and noise blur it, so a history of ten clicks tells the taste
HISTORY_SHARPNESS = 2.0  # share of history clicks on news of a favourite entity
# Age of a candidate in days (0 = published that day): mostly fresh, as in MIND.
CANDIDATE_AGE_P = (0.62, 0.25, 0.06, 0.04, 0.03)
CANDIDATES_MEDIAN, CANDIDATES_SIGMA = 23.0, 0.85  # log-normal: mean ~33, long tail like MIND
HISTORY_MEDIAN, HISTORY_SIGMA, HISTORY_EMPTY = 10.0, 1.0, 0.04  # many short histories, some empty
ENTITY_TYPES = ("P", "O", "G")
ENTITY_TYPE_P = (0.45, 0.35, 0.20)

Progress = Callable[[str, int, int], None]  # (phase, done, total)


@dataclass
class SynthSummary:
    """What `synthesize` wrote."""

    root: Path
    news: int
    users: int
    entities: int
    impressions: dict[str, int] = field(default_factory=dict)
    candidates: int = 0
    clicks: int = 0
    files: list[Path] = field(default_factory=list)

    @property
    def click_rate(self) -> float:
        return self.clicks / max(self.candidates, 1)


@dataclass
class _Topics:
    category: list[str]  # [S]
    subcategory: list[str]  # [S]
    category_index: np.ndarray  # int [S]
    share: np.ndarray  # float [S], w_s
    theme_share: np.ndarray  # float [T], v_t


@dataclass
class _Entities:
    ids: list[str]
    labels: list[str]
    types: list[str]
    subcat: np.ndarray  # int [E]
    weight: np.ndarray  # float [E], popularity inside the subcategory
    factors: np.ndarray  # float [E, FACTORS], f_e
    vectors: np.ndarray  # float32 [E, 100]


@dataclass
class _News:
    ids: list[str]
    subcat: np.ndarray  # int [N]
    theme: np.ndarray  # int [N]
    factor: np.ndarray  # float [N, FACTORS], mean f_e of its entities (0 without any)
    publish: np.ndarray  # int [N], day relative to the log start (negative: before it)
    popularity: np.ndarray  # float [N], z
    entities: np.ndarray  # int [N, 3], entity indices, -1 = none (title then abstract)
    rows: list[str]  # news.tsv lines


@dataclass
class _Users:
    theta: np.ndarray  # float [U, S], taste over subcategories
    phi: np.ndarray  # float [U, T], taste over themes
    favourites: np.ndarray  # int [U, 3], entity indices
    liking: np.ndarray  # float [U, FACTORS], p_u


def synthesize(
    out: str | Path, settings: SynthSettings, progress: Progress | None = None, *, force: bool = False
) -> SynthSummary:
    """Write a synthetic MIND dataset to `out/train`, `out/valid` (news, behaviors, entity vectors).

    `out` must be new or empty unless `force` (then its files are overwritten).
    """
    out = Path(out)
    require_empty_folder(out, force)
    report = progress or (lambda phase, done, total: None)
    pre_days = max(1, round(settings.days * PRE_DAYS_SHARE))
    total_days = pre_days + settings.days
    if settings.news < 5 * total_days:
        raise SettingsError(
            f"synth.news = {settings.news}: at least {5 * total_days} news are needed for "
            f"{settings.days} days (5 per publish day)"
        )
    streams = np.random.SeedSequence(settings.seed).spawn(6)
    rng_topics, rng_entities, rng_news, rng_users, rng_imps, rng_clicks = (
        np.random.default_rng(s) for s in streams
    )
    text_rng = random.Random(settings.seed * 7919 + 17)

    topics = _make_topics(rng_topics)
    n_entities = max(4 * len(topics.subcategory), settings.news // 3)
    entities = _make_entities(rng_entities, topics, n_entities)
    report("news", 0, settings.news)
    news = _make_news(rng_news, text_rng, topics, entities, settings.news, pre_days, settings.days, report)

    users = _make_users(rng_users, topics, entities, settings.users)
    report("users", settings.users, settings.users)
    pre_history = _pre_history(rng_users, users, news, entities, topics)

    imp_user, imp_time, cand_offsets, candidates = _impressions(rng_imps, news, settings, pre_days)
    buzz = None
    if settings.trending > 0:
        # its own stream (the 7th child of the seed): the files without trending stay as they were
        rng_buzz = np.random.default_rng(np.random.SeedSequence(settings.seed).spawn(7)[6])
        buzz = settings.trending * _buzz(rng_buzz, news, imp_time, cand_offsets, candidates)
    labels = _clicks(rng_clicks, users, topics, news, imp_user, cand_offsets, candidates, buzz)
    report("impressions", len(imp_user), len(imp_user))

    try:
        out.mkdir(parents=True, exist_ok=True)
        summary = _write(
            out,
            settings,
            topics,
            entities,
            news,
            pre_history,
            imp_user,
            imp_time,
            cand_offsets,
            candidates,
            labels,
            report,
        )
    except OSError as exc:
        raise InputError(f"cannot write the dataset: {exc.strerror or exc}", path=out) from None
    return summary


# ---------------------------------------------------------------------------------------------
# topics, entities, news


def _make_topics(rng: np.random.Generator) -> _Topics:
    category, subcategory, cat_index = [], [], []
    for c, cat in enumerate(CATEGORIES):
        for sub in cat.subcategories:
            category.append(cat.name)
            subcategory.append(sub)
            cat_index.append(c)
    share = rng.gamma(2.0, 1.0, size=len(subcategory))
    theme_share = rng.gamma(4.0, 1.0, size=len(THEMES))
    return _Topics(
        category, subcategory, np.array(cat_index), share / share.sum(), theme_share / theme_share.sum()
    )


def _make_entities(rng: np.random.Generator, topics: _Topics, n: int) -> _Entities:
    S = len(topics.subcategory)
    # every subcategory gets at least 3 entities, the rest by its share of the news
    per_sub = 3 + rng.multinomial(n - 3 * S, topics.share)
    subcat = np.repeat(np.arange(S), per_sub)
    rank = np.concatenate([rng.permutation(k) for k in per_sub])
    weight = 1.0 / (rank + 1.0) ** 0.9  # Zipf popularity inside the subcategory
    types_idx = rng.choice(len(ENTITY_TYPES), size=len(subcat), p=ENTITY_TYPE_P)
    first = rng.integers(len(FIRST_NAMES), size=len(subcat))
    last = rng.integers(len(LAST_NAMES), size=len(subcat))
    place = rng.integers(len(PLACES), size=len(subcat))
    suffix_draw = rng.random(len(subcat))
    labels, types = [], []
    for e, s in enumerate(subcat.tolist()):
        kind = ENTITY_TYPES[types_idx[e]]
        types.append(kind)
        if kind == "P":
            labels.append(f"{FIRST_NAMES[first[e]]} {LAST_NAMES[last[e]]}")
        elif kind == "O":
            suffixes = CATEGORIES[topics.category_index[s]].org_suffixes
            labels.append(f"{PLACES[place[e]]} {suffixes[int(suffix_draw[e] * len(suffixes))]}")
        else:
            labels.append(PLACES[place[e]])
    # Wikidata-like IDs, unique, not in subcategory order
    ids = [f"Q{10_000 + k}" for k in rng.permutation(len(subcat)).tolist()]
    centroids = rng.normal(0.0, 0.08, size=(S, VEC_DIM))
    factors = rng.normal(0.0, 1.0, size=(len(subcat), FACTORS))
    # the factor is in the vector as the knowledge graph would hold it: a fixed linear image
    projection = rng.normal(0.0, 0.12 / math.sqrt(FACTORS), size=(FACTORS, VEC_DIM))
    noise = rng.normal(0.0, 0.04, size=(len(subcat), VEC_DIM))
    vectors = (centroids[subcat] + factors @ projection + noise).astype(np.float32)
    return _Entities(ids, labels, types, subcat, weight, factors, vectors)


def _pick_in_groups(
    rng: np.random.Generator, group: np.ndarray, offsets: np.ndarray, cum_weight: np.ndarray
) -> np.ndarray:
    """For each slot, a member of its group drawn by weight (members sorted by group, CSR offsets).

    `cum_weight` is the running sum of member weights over all groups; every group must be non-empty.
    """
    lo, hi = offsets[group], offsets[group + 1]
    base = np.where(lo > 0, cum_weight[np.maximum(lo - 1, 0)], 0.0)
    target = base + rng.random(len(group)) * (cum_weight[hi - 1] - base)
    return np.clip(np.searchsorted(cum_weight, target, side="right"), lo, hi - 1)


def _csr(keys: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Members (indices into `keys`) sorted by key, and offsets per key."""
    order = np.argsort(keys, kind="stable")
    offsets = np.zeros(n_groups + 1, dtype=np.int64)
    np.cumsum(np.bincount(keys, minlength=n_groups), out=offsets[1:])
    return order, offsets


def _make_news(
    rng: np.random.Generator,
    text_rng: random.Random,
    topics: _Topics,
    entities: _Entities,
    n: int,
    pre_days: int,
    days: int,
    report: Progress,
) -> _News:
    S = len(topics.subcategory)
    subcat = rng.choice(S, size=n, p=topics.share)
    theme = rng.choice(len(THEMES), size=n, p=topics.theme_share)
    # balanced publish days, so every day has fresh news to show
    publish = rng.permutation(np.arange(n) % (pre_days + days)) - pre_days
    popularity = rng.normal(0.0, 1.0, size=n)

    members, offsets = _csr(entities.subcat, S)
    cum_weight = np.cumsum(entities.weight[members])
    # up to two title entities and one more in the abstract; duplicates dropped below
    n_title = rng.choice(3, size=n, p=(0.3, 0.5, 0.2))
    has_abstract_entity = rng.random(n) < 0.35
    draws = members[_pick_in_groups(rng, np.repeat(subcat, 3), offsets, cum_weight)].reshape(n, 3)
    ent = np.full((n, 3), -1, dtype=np.int64)
    ent[:, 0] = np.where(n_title >= 1, draws[:, 0], -1)
    ent[:, 1] = np.where((n_title >= 2) & (draws[:, 1] != draws[:, 0]), draws[:, 1], -1)
    ent[:, 2] = np.where(
        has_abstract_entity & (draws[:, 2] != draws[:, 0]) & (draws[:, 2] != draws[:, 1]), draws[:, 2], -1
    )

    ids = [f"N{i + 1}" for i in range(n)]
    url_codes = rng.integers(36**4, 36**5, size=n)
    rows = []
    step = max(1, n // 100)
    for i in range(n):
        s = int(subcat[i])
        cat = CATEGORIES[topics.category_index[s]]
        sub_nouns = cat.subcategories[topics.subcategory[s]]
        title_ents = [int(e) for e in ent[i, :2] if e >= 0]
        abstract_ents = [int(e) for e in ent[i, 2:] if e >= 0]
        th = THEMES[int(theme[i])]
        title, title_pos = _title(text_rng, cat, th, sub_nouns, [entities.labels[e] for e in title_ents])
        abstract, abstract_pos = _abstract(
            text_rng, cat, th, sub_nouns, [entities.labels[e] for e in title_ents[:1] + abstract_ents]
        )
        # the abstract names its own entity, else the first title entity again (listed too, as in
        # MIND); an abstract entity the text does not name is dropped, so the columns stay true
        abs_list = (title_ents[:1] + abstract_ents)[-1:] if abstract_pos else []
        if abstract_ents and abs_list != abstract_ents:
            ent[i, 2] = -1
        rows.append(
            "\t".join(
                (
                    ids[i],
                    cat.name,
                    topics.subcategory[s],
                    title,
                    abstract,
                    f"https://assets.msn.com/labs/mind/AA{_base36(int(url_codes[i]))}.html",
                    _entity_json(entities, title_ents, title_pos, text_rng),
                    _entity_json(entities, abs_list, abstract_pos, text_rng),
                )
            )
            + "\n"
        )
        if (i + 1) % step == 0:
            report("news", i + 1, n)
    report("news", n, n)
    has = ent >= 0
    factor = (entities.factors[np.maximum(ent, 0)] * has[:, :, None]).sum(axis=1)
    factor /= np.maximum(has.sum(axis=1), 1)[:, None]
    return _News(ids, subcat, theme, factor, publish, popularity, ent, rows)


def _base36(value: int) -> str:
    digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    out = ""
    while value:
        value, r = divmod(value, 36)
        out = digits[r] + out
    return out


def _compose(parts: list[str], slots: dict[str, str]) -> tuple[str, list[int]]:
    """Join template parts, filling `{E}`/`{E2}` with entity names; return text and their offsets."""
    text, offsets = "", []
    for part in parts:
        if part in ("{E}", "{E2}"):
            offsets.append(len(text))
            text += slots[part]
        else:
            text += part
    return text, offsets


def _title(
    rng: random.Random, cat, theme, sub_nouns: tuple[str, ...], names: list[str]
) -> tuple[str, list[int]]:
    # the second noun and the adjective come from the theme: the title tells both taste axes
    sn, sn2 = rng.choice(sub_nouns), rng.choice(theme.nouns)
    cn = rng.choice(cat.nouns)
    verb, adj, when = rng.choice(cat.verbs), rng.choice(theme.adjectives), rng.choice(TIME_WORDS)
    if len(names) >= 2:
        templates = [
            ["{E}", f" {verb} ", "{E2}", f" over the {sn} and the {sn2}"],
            ["{E}", " and ", "{E2}", f": the {adj} {sn} that {verb} the {sn2}"],
        ]
    elif names:
        templates = [
            ["{E}", f" {verb} the {adj} {sn} and the {sn2}"],
            ["How ", "{E}", f" {verb} the {sn} and the {sn2}"],
            ["{E}", f"'s {sn}: {adj} {cn} and the {sn2}"],
            ["Why ", "{E}", f" {verb} the {adj} {sn} {when}"],
        ]
    else:
        templates = [
            [f"{rng.choice(LIST_NUMBERS)} {adj} {sn} and {sn2} ideas"],
            [f"The {adj} {sn} that {verb} the {sn2}"],
            [f"{adj} {sn} {verb} {sn2} {when}"],
            [f"What the {sn} means for the {sn2} and the {cn}"],
        ]
    text, offsets = _compose(
        rng.choice(templates), {"{E}": names[0] if names else "", "{E2}": names[1] if len(names) > 1 else ""}
    )
    return text[0].upper() + text[1:], offsets


def _abstract(
    rng: random.Random, cat, theme, sub_nouns: tuple[str, ...], names: list[str]
) -> tuple[str, list[int]]:
    if rng.random() < 0.05:
        return "", []  # MIND has empty abstracts
    sn, sn3 = rng.sample(sub_nouns, 2)
    sn2 = rng.choice(theme.nouns)
    cn, cn2 = rng.sample(cat.nouns, 2)
    verb, adj, adj2 = rng.choice(cat.verbs), rng.choice(theme.adjectives), rng.choice(cat.adjectives)
    first = [
        [f"The {adj} {sn} {verb} the {cn} {rng.choice(TIME_WORDS)}, and the {sn2} is next."],
        [f"Here is what to know about the {sn}, the {sn2} and the {adj} {cn}."],
        [f"{cn.capitalize()} and {sn} are {adj} again, and the {sn2} {verb} the {cn2}."],
    ]
    with_name = [
        ["", "{E}", f" {verb} the {sn} after {adj2} {cn2}, and the {sn3} is next."],
        [f"The {adj2} {sn3} {verb} the {cn2}, ", "{E}", " said."],
    ]
    parts = list(rng.choice(first))
    if names and rng.random() < 0.7:
        parts[-1] += " "
        parts += rng.choice(with_name)
        return _compose(parts, {"{E}": names[-1]})
    return _compose(parts, {})


def _entity_json(entities: _Entities, chosen: list[int], offsets: list[int], rng: random.Random) -> str:
    """The entity column as MIND writes it (`[]` when none)."""
    items = []
    for e, offset in zip(chosen, offsets, strict=True):
        label = entities.labels[e]
        confidence = 1.0 if rng.random() < 0.6 else round(0.85 + 0.15 * rng.random(), 2)
        items.append(
            {
                "Label": label,
                "Type": entities.types[e],
                "WikidataId": entities.ids[e],
                "Confidence": confidence,
                "OccurrenceOffsets": [offset],
                "SurfaceForms": [label],
            }
        )
    return json.dumps(items, ensure_ascii=False)


# ---------------------------------------------------------------------------------------------
# users and their histories


def _make_users(rng: np.random.Generator, topics: _Topics, entities: _Entities, n: int) -> _Users:
    """Tastes over subcategories and themes, three favourite entities and a liking of entity factors."""
    S = len(topics.subcategory)
    raw = rng.gamma(0.25, 1.0, size=(n, S)) * topics.share  # sparse: a few topics per user
    raw /= raw.sum(axis=1, keepdims=True)
    theta = 0.85 * raw + 0.15 * topics.share
    fav_sub = _categorical_rows(rng, theta, np.repeat(np.arange(n), 3))
    members, offsets = _csr(entities.subcat, S)
    cum_weight = np.cumsum(entities.weight[members])
    favourites = members[_pick_in_groups(rng, fav_sub, offsets, cum_weight)].reshape(n, 3)
    raw_t = rng.gamma(0.4, 1.0, size=(n, len(topics.theme_share))) * topics.theme_share
    raw_t /= raw_t.sum(axis=1, keepdims=True)
    phi = 0.8 * raw_t + 0.2 * topics.theme_share
    liking = rng.normal(0.0, 1.0, size=(n, FACTORS))
    return _Users(theta, phi, favourites, liking)


def _preference(
    users: _Users, topics: _Topics, news: _News, user: np.ndarray, item: np.ndarray
) -> np.ndarray:
    """The taste part of the click logit of `user[k]` for news `item[k]` (no popularity, no noise)."""
    sub, theme = news.subcat[item], news.theme[item]
    ents = news.entities[item]  # [C, 3]
    fav = users.favourites[user]  # [C, 3]
    favourite_hit = ((ents[:, :, None] == fav[:, None, :]) & (ents[:, :, None] >= 0)).any(axis=(1, 2))
    return (
        TASTE * np.log(users.theta[user, sub] / topics.share[sub])
        + THEME * np.log(users.phi[user, theme] / topics.theme_share[theme])
        + ENTITY * favourite_hit
        + FACTOR * np.einsum("cf,cf->c", users.liking[user], news.factor[item]) / 2.0
    )


def _categorical_rows(rng: np.random.Generator, probs: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """One draw from `probs[rows[k]]` per k (chunked so memory stays small)."""
    cum = np.cumsum(probs, axis=1)
    cum[:, -1] = 1.0
    out = np.empty(len(rows), dtype=np.int64)
    r = rng.random(len(rows))
    for start in range(0, len(rows), 100_000):
        sl = slice(start, start + 100_000)
        out[sl] = (cum[rows[sl]] < r[sl, None]).sum(axis=1)
    return out


def _pre_history(
    rng: np.random.Generator, users: _Users, news: _News, entities: _Entities, topics: _Topics
) -> list[list[int]]:
    """Clicks before the log: the preferred of a pool of old news, or a news of a favourite entity."""
    U = len(users.theta)
    favourites = users.favourites
    lengths = np.floor(rng.lognormal(math.log(HISTORY_MEDIAN), HISTORY_SIGMA, size=U)).astype(np.int64)
    lengths = np.clip(lengths, 1, 200)
    lengths[rng.random(U) < HISTORY_EMPTY] = 0
    owner = np.repeat(np.arange(U), lengths)

    old = np.flatnonzero(news.publish < 0)
    exposure = np.exp(0.5 * news.popularity[old])
    # by taste: HISTORY_POOL old news by exposure, the user takes the best by preference + Gumbel
    # noise (a draw from softmax(preference)), in chunks so memory stays small
    picked = np.empty(len(owner), dtype=np.int64)
    cum = np.cumsum(exposure)
    for start in range(0, len(owner), 20_000):
        who = owner[start : start + 20_000]
        pool = old[
            np.minimum(np.searchsorted(cum, rng.random((len(who), HISTORY_POOL)) * cum[-1]), len(old) - 1)
        ]
        pref = _preference(users, topics, news, np.repeat(who, HISTORY_POOL), pool.ravel())
        key = HISTORY_SHARPNESS * pref.reshape(pool.shape) - np.log(-np.log(rng.random(pool.shape)))
        picked[start : start + len(who)] = pool[np.arange(len(who)), key.argmax(axis=1)]

    # by entity: an old news that mentions one of the user's favourites
    ent_of_old = news.entities[old]
    has = ent_of_old >= 0
    e_news = np.repeat(old, has.sum(axis=1))
    e_keys = ent_of_old[has]
    e_order, e_offsets = _csr(e_keys, len(entities.ids))
    e_members = e_news[e_order]
    fav = favourites[owner, rng.integers(3, size=len(owner))]
    counts = e_offsets[fav + 1] - e_offsets[fav]
    by_entity = (rng.random(len(owner)) < HISTORY_BY_ENTITY) & (counts > 0)
    pos = e_offsets[fav] + np.floor(rng.random(len(owner)) * np.maximum(counts, 1)).astype(np.int64)
    picked = np.where(by_entity, e_members[np.minimum(pos, len(e_members) - 1)], picked)

    # drop repeats of a news in one history, keep a random order
    key = owner * len(news.ids) + picked
    _, first = np.unique(key, return_index=True)
    keep = np.sort(first)
    owner, picked = owner[keep], picked[keep]
    shuffle = np.lexsort((rng.random(len(owner)), owner))
    owner, picked = owner[shuffle], picked[shuffle]
    bounds = np.searchsorted(owner, np.arange(U + 1))
    flat = picked.tolist()
    return [flat[bounds[u] : bounds[u + 1]] for u in range(U)]


# ---------------------------------------------------------------------------------------------
# impressions and clicks


def _impressions(
    rng: np.random.Generator, news: _News, settings: SynthSettings, pre_days: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Users, times (seconds since START), candidate offsets and candidates, in time order."""
    per_user = np.minimum(rng.geometric(1.0 / settings.impressions_per_user, size=settings.users), 100)
    user = np.repeat(np.arange(settings.users), per_user)
    day = rng.integers(settings.days, size=len(user))
    second = rng.integers(86_400, size=len(user))
    order = np.lexsort((user, second, day))
    user, day, second = user[order], day[order], second[order]
    times = day.astype(np.int64) * 86_400 + second

    counts = np.rint(rng.lognormal(math.log(CANDIDATES_MEDIAN), CANDIDATES_SIGMA, size=len(user)))
    counts = np.clip(counts, 2, 300).astype(np.int64)
    imp_of_slot = np.repeat(np.arange(len(user)), counts)
    age = rng.choice(len(CANDIDATE_AGE_P), size=len(imp_of_slot), p=CANDIDATE_AGE_P)
    publish_day = np.maximum(day[imp_of_slot] - age, -pre_days)
    order, offsets = _csr(news.publish + pre_days, pre_days + settings.days)
    exposure = np.exp(0.5 * news.popularity[order])
    slot_news = order[_pick_in_groups(rng, publish_day + pre_days, offsets, np.cumsum(exposure))]

    # one news at most once per impression, in a random order within it
    key = imp_of_slot * len(news.ids) + slot_news
    _, first = np.unique(key, return_index=True)
    imp_of_slot, slot_news = imp_of_slot[first], slot_news[first]
    shuffle = np.lexsort((rng.random(len(imp_of_slot)), imp_of_slot))
    imp_of_slot, slot_news = imp_of_slot[shuffle], slot_news[shuffle]
    cand_offsets = np.zeros(len(user) + 1, dtype=np.int64)
    np.cumsum(np.bincount(imp_of_slot, minlength=len(user)), out=cand_offsets[1:])
    return user, times, cand_offsets, slot_news


def _clicks(
    rng: np.random.Generator,
    users: _Users,
    topics: _Topics,
    news: _News,
    imp_user: np.ndarray,
    cand_offsets: np.ndarray,
    candidates: np.ndarray,
    buzz: np.ndarray | None = None,
) -> np.ndarray:
    """Labels (int8) of the candidates from the click model, about CLICK_RATE of them 1; `buzz`
    (float [C], optional) is a time-varying popularity term added to each candidate's logit."""
    imp_of = np.repeat(np.arange(len(imp_user)), np.diff(cand_offsets))
    user = imp_user[imp_of]
    logit = (
        _preference(users, topics, news, user, candidates)
        + POPULARITY * news.popularity[candidates]
        + NOISE * rng.normal(size=len(candidates))
    )
    if buzz is not None:
        logit = logit + buzz
    starts = cand_offsets[:-1]

    def expected_rate(c: float) -> float:
        p = 1.0 / (1.0 + np.exp(-(logit + c)))
        none = np.exp(np.add.reduceat(np.log1p(-np.minimum(p, 1 - 1e-12)), starts))
        return float((p.sum() + none.sum()) / len(p))

    lo, hi = -20.0, 5.0
    for _ in range(40):  # bisection on the bias: the expected click rate grows with it
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if expected_rate(mid) < CLICK_RATE else (lo, mid)
    p = 1.0 / (1.0 + np.exp(-(logit + (lo + hi) / 2)))
    labels = (rng.random(len(p)) < p).astype(np.int8)

    # an impression without a click gets one, drawn by the same probabilities (Gumbel-max)
    clicked = np.add.reduceat(labels.astype(np.int64), starts) > 0
    key = logit - np.log(-np.log(rng.random(len(p))))
    best = np.maximum.reduceat(key, starts)
    is_best = key == best[imp_of]
    need = ~clicked[imp_of] & is_best
    labels[need] = 1
    # and one with every candidate clicked (a short one) loses its least liked click, as MIND has
    # a non-click in every impression; impressions have at least two candidates
    all_clicked = np.add.reduceat(labels.astype(np.int64), starts) == np.diff(cand_offsets)
    worst = np.minimum.reduceat(key, starts)
    labels[all_clicked[imp_of] & (key == worst[imp_of])] = 0
    return labels


def _buzz(
    rng: np.random.Generator,
    news: _News,
    imp_time: np.ndarray,
    cand_offsets: np.ndarray,
    candidates: np.ndarray,
) -> np.ndarray:
    """Each candidate's buzz at its impression's time, float [C]: a news has a strength
    `s ~ N(0, 1)` (no word or category shows it) that peaks at a random hour of its publish day
    and fades with a Gaussian of BUZZ_HOURS: what is being clicked now, seen only in the stream."""
    strength = rng.normal(size=len(news.ids))
    peak = news.publish.astype(np.float64) * 86_400 + rng.uniform(0, 86_400, size=len(news.ids))
    when = np.repeat(imp_time.astype(np.float64), np.diff(cand_offsets))
    hours = (when - peak[candidates]) / 3600.0
    return strength[candidates] * np.exp(-0.5 * (hours / BUZZ_HOURS) ** 2)


# ---------------------------------------------------------------------------------------------
# writing


def _write(
    out: Path,
    settings: SynthSettings,
    topics: _Topics,
    entities: _Entities,
    news: _News,
    pre_history: list[list[int]],
    imp_user: np.ndarray,
    imp_time: np.ndarray,
    cand_offsets: np.ndarray,
    candidates: np.ndarray,
    labels: np.ndarray,
    report: Progress,
) -> SynthSummary:
    valid_day = settings.days - 1
    start = int(START.timestamp())
    ids = news.ids
    users = [f"U{u + 1}" for u in range(settings.users)]
    suffix = ("-0", "-1")
    c_off = cand_offsets.tolist()
    cand_list = candidates.tolist()
    label_list = labels.tolist()
    history = [" ".join(ids[n] for n in h) for h in pre_history]
    later_clicks: list[list[int]] = [[] for _ in range(settings.users)]
    is_valid = ((imp_time // 86_400) == valid_day).tolist()
    for split in ("train", "valid"):
        (out / split).mkdir(parents=True, exist_ok=True)

    # behaviors are streamed to both files in time order; the news each split needs are noted
    counts = {"train": 0, "valid": 0}
    valid_refs: set[int] = set()
    total = len(imp_user)
    step = max(1, total // 100)
    with (
        atomic.text_handle(out / "train" / "behaviors.tsv") as train_file,
        atomic.text_handle(out / "valid" / "behaviors.tsv") as valid_file,
    ):
        for i, (u, t) in enumerate(zip(imp_user.tolist(), imp_time.tolist(), strict=True)):
            split = "valid" if is_valid[i] else "train"
            a, b = c_off[i], c_off[i + 1]
            counts[split] += 1
            cands = " ".join(ids[cand_list[k]] + suffix[label_list[k]] for k in range(a, b))
            line = f"{counts[split]}\t{users[u]}\t{format_time(start + t)}\t{history[u]}\t{cands}\n"
            (valid_file if split == "valid" else train_file).write(line)
            if split == "valid":
                valid_refs.update(pre_history[u])
                valid_refs.update(later_clicks[u])
                valid_refs.update(cand_list[a:b])
            # clicks of this impression are history for the user's later impressions
            clicked = [cand_list[k] for k in range(a, b) if label_list[k]]
            later_clicks[u].extend(clicked)
            history[u] = " ".join(filter(None, [history[u], *(ids[n] for n in clicked)]))
            if (i + 1) % step == 0:
                report("write", i + 1, total)
    report("write", total, total)

    train_news = np.flatnonzero(news.publish < valid_day)
    valid_news = np.union1d(
        np.flatnonzero(news.publish == valid_day), np.fromiter(valid_refs, dtype=np.int64)
    )
    summary = SynthSummary(root=out, news=len(ids), users=settings.users, entities=len(entities.ids))
    for split, rows_idx in (("train", train_news), ("valid", valid_news)):
        folder = out / split
        write_lines(folder / "news.tsv", (news.rows[n] for n in rows_idx.tolist()))
        ents = np.unique(news.entities[rows_idx])
        ents = ents[ents >= 0]
        write_lines(folder / "entity_embedding.vec", (_vec_line(entities, e) for e in ents.tolist()))
        summary.files += [folder / "news.tsv", folder / "behaviors.tsv", folder / "entity_embedding.vec"]
        summary.impressions[split] = counts[split]
    summary.candidates = len(candidates)
    summary.clicks = int(labels.sum())
    return summary


def _vec_line(entities: _Entities, e: int) -> str:
    # MIND's files end each line with a tab
    return entities.ids[e] + "\t" + "\t".join(f"{v:.6f}" for v in entities.vectors[e].tolist()) + "\t\n"
