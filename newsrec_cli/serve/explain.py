"""Why a news item was recommended, read from the torch model (the web page's reasons).

For a history and the recommended news, `Explainer.explain` returns, per recommended news:

- the fusion weight of each modality (ID, text, graph, category) for that news item, as the
  model's attention or gate fusion computed it (`_Fusion.item_weights`); None for concat fusion,
  whose MLP has no per-modality weight;
- every clicked news with the user encoder's attention on it (NRMS: the additive attention
  pooling, the same for every candidate; candidate-aware encoder: the candidate's own attention
  over the history) and the cosine of the raw text vectors, ranked by what differs per candidate
  (candidate attention, else text similarity, else the NRMS attention);
- the entities and categories it shares with the clicked news;
- for a run trained with popularity, the popularity term added to its logit from the live counts
  (`popularity`: the term, the smoothed CTR, decayed clicks and impressions, and the gate's trust
  for this history length with the gate head), and the head's learned weights.

News ingested through the API are explained from their records and kept text vectors, encoded as
the service encodes them. The ONNX graphs do not expose these intermediate values, so explanations always run the torch
model of the run (the served one when the backend is torch; loaded once beside ONNX otherwise).
The ranking path of the service does not go through here and stays as fast as before.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from newsrec_cli.embed.store import EmbeddingStore, is_store
from newsrec_cli.mind.popularity import FEATURES
from newsrec_cli.serve.backends import NewsInputs, TorchBackend, encode_news_with
from newsrec_cli.serve.engine import INGESTED_TEXT, Engine, NewsRecord
from newsrec_cli.serve.errors import InvalidRequest, UnknownNews, Unsupported, name_ids
from newsrec_cli.serve.export import run_news_inputs

TOP_CONTRIBUTORS = 3


class Explainer:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.ready = False
        self.error: str | None = None
        self._load_lock = threading.Lock()

    def load(self) -> None:
        """The torch run, its news inputs by ID, and the lock of the model it uses."""
        from newsrec_cli.runs.loading import load_run  # torch: only for an explanation

        with self._load_lock:
            if self.ready:
                return
            engine = self.engine
            if engine.run is not None and isinstance(engine.backend, TorchBackend):
                self.run, self.lock = engine.run, engine.backend.lock  # the served model: share its lock
            elif engine.run_dir is not None:
                store = engine.config.run_store
                self.run, self.lock = load_run(engine.run_dir, device="cpu", store=store), threading.Lock()
            else:
                raise Unsupported("this export names no run directory: explanations need the torch run")
            self.model = self.run.model.eval()
            ids, self.inputs, _ = run_news_inputs(self.run)
            self.rows = {id_: i for i, id_ in enumerate(ids)}
            encoder = self.model.user_encoder
            self.attention_kind = (
                "candidate attention"
                if hasattr(encoder, "unpack")
                else "history attention (NRMS additive pooling)"
            )
            self.fusion = self.run.settings.fusion
            self.modalities = list(self.model.news_encoder.fusion.names)
            self.ready = True

    def info(self) -> dict[str, Any]:
        return {
            "fusion": self.fusion,
            "modalities": self.modalities,
            "attention": self.attention_kind,
            "user_encoder": self.run.settings.user_encoder,
            "scoring": self.run.settings.scoring,
        }

    def _inputs_of(self, ids: list[str]) -> Any:
        """News-encoder inputs of `ids` in order: the run's news from the run's inputs, news
        ingested through the API from their records and persisted text vectors (as served)."""
        engine = self.engine
        fresh = [i for i in dict.fromkeys(ids) if i not in self.rows]
        records = [engine.get_news(i) for i in fresh]
        unknown = [i for i, r in zip(fresh, records, strict=True) if r is None]
        if unknown:
            raise UnknownNews("unknown news IDs", unknown)
        run_rows = np.asarray([self.rows[i] for i in ids if i in self.rows], np.int64)
        known = self.inputs.rows(run_rows)
        if not fresh:
            return known
        text = None
        if engine.text_inputs:
            path = engine.state_dir / INGESTED_TEXT
            store = EmbeddingStore.open(path) if is_store(path) else None
            text, missing = store.lookup(fresh) if store is not None else (None, fresh)
            if missing:
                raise Unsupported(f"no text vector kept for these news: {name_ids(missing)}")
        added = engine.news_inputs([r for r in records if r is not None], text)
        # Gather both parts back into the order of `ids`.
        place = {i: len(run_rows) + j for j, i in enumerate(fresh)}
        order, seen = [], 0
        for i in ids:
            if i in self.rows:
                order.append(seen)
                seen += 1
            else:
                order.append(place[i])
        both = NewsInputs(
            *(
                _concat([getattr(known, f), getattr(added, f)])
                for f in (
                    "id_index",
                    "category",
                    "subcategory",
                    "text",
                    "text_present",
                    "graph_vector",
                    "graph_present",
                )
            )
        )
        return both.rows(np.asarray(order, np.int64))

    def explain(
        self, history: list[str], items: list[str], user_id: str | None = None, top: int = TOP_CONTRIBUTORS
    ) -> dict[str, Any]:
        import torch  # only for an explanation

        if not self.ready:
            self.load()
        engine = self.engine
        if not items:
            raise InvalidRequest("items is empty: give the recommended news IDs to explain")
        used = history[max(0, len(history) - engine.history) :]  # the most recent clicks, as served
        H, K = len(used), len(items)
        inputs = self._inputs_of([*used, *items])
        users = engine.vocabs.get("users")
        user_row = users.get(user_id) if users is not None and user_id else 0
        model = self.model
        with self.lock, torch.no_grad():
            feed = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in inputs.as_dict().items()}
            vectors = encode_news_with(model, feed).float()  # (H+K, dim), fusion in the same order
            fusion = model.news_encoder.fusion.item_weights()
            fusion = None if fusion is None else fusion.cpu().numpy()
            clicked = vectors[:H][None] if H else torch.zeros(1, 1, vectors.shape[1])
            mask = torch.ones(1, max(H, 1), dtype=torch.bool) if H else torch.zeros(1, 1, dtype=torch.bool)
            state = model.encode_user_state(clicked, mask, torch.tensor([user_row]))
            candidates = vectors[H:][None]  # (1, K, dim)
            scores = model.score(state, candidates)[0].numpy()
            popularity = self._popularity(items, len(history))
            if popularity is not None:  # the score as served: with the popularity term
                scores = scores + np.asarray([p["term"] for p in popularity], np.float32)
            per_candidate = model.history_attention(state, candidates)
            if not H:
                attention = None
            elif per_candidate is not None:
                attention = per_candidate[0].float().numpy()  # (K, H)
            else:
                weights = model.user_encoder.history_weights(clicked[..., : model.news_dim], mask)
                attention = np.broadcast_to(weights[0].float().numpy(), (K, H))
        similarity = None
        if inputs.text is not None and H:
            unit = inputs.text / np.maximum(np.linalg.norm(inputs.text, axis=1, keepdims=True), 1e-12)
            similarity = unit[H:] @ unit[:H].T  # (K, H) cosine of the raw text vectors
        if per_candidate is not None and H:
            ranked_by = "candidate attention"
        elif similarity is not None:
            ranked_by = "text similarity"
        else:
            ranked_by = "history attention"
        records = [engine.get_news(i) or NewsRecord(news_id=i) for i in used]
        out = []
        for k, news_id in enumerate(items):
            contributors = []
            for h in range(H):
                contributors.append(
                    {
                        "news_id": used[h],
                        "attention": None if attention is None else float(attention[k, h]),
                        "text_similarity": None if similarity is None else float(similarity[k, h]),
                    }
                )
            key = "text_similarity" if ranked_by == "text similarity" else "attention"
            contributors.sort(key=lambda c: -(c[key] if c[key] is not None else 0.0))
            record = engine.get_news(news_id) or NewsRecord(news_id=news_id)
            out.append(
                {
                    "news_id": news_id,
                    "score": float(scores[k]),
                    "modality_weights": None
                    if fusion is None
                    else {m: float(w) for m, w in zip(self.modalities, fusion[H + k], strict=True)},
                    "popularity": None if popularity is None else popularity[k],
                    "contributors": contributors[:top],
                    **_shared(record, records),
                }
            )
        return {
            "model_version": engine.version,
            "fusion": self.fusion,
            "modalities": self.modalities,
            "weights": "per-news fusion weights of the model"
            if fusion is not None
            else "concat fusion: an MLP over the concatenated modalities has no per-modality weight",
            "attention": self.attention_kind,
            "ranked_by": ranked_by,
            "history_used": H,
            "popularity": None
            if popularity is None
            else {"head": model.popularity.mode, **model.popularity.describe(), **engine.freshness()},
            "items": out,
        }

    def _popularity(self, items: list[str], history_length: int) -> list[dict[str, Any]] | None:
        """Per item: the popularity term of its logit and what it came from (None without popularity).
        Called under the model's lock, in no_grad."""
        import torch  # only for an explanation

        head = getattr(self.model, "popularity", None)
        if head is None or self.engine.popularity is None:
            return None
        raw = self.engine.popularity.features(items)  # (K, F)
        length = torch.tensor([[float(history_length)]])
        term = head(torch.from_numpy(raw)[None], length)[0].numpy()  # (K,)
        trust = None
        if head.mode == "gate":
            trust = float(2 * torch.sigmoid(head.gate(torch.log1p(length)[..., None]))[0, 0, 0])
        named = [dict(zip(FEATURES, row.tolist(), strict=True)) for row in raw]
        return [
            {
                "term": float(term[k]),
                "trust": trust,
                "ctr": named[k]["ctr"],
                "clicks": named[k]["clicks"],
                "impressions": named[k]["impressions"],
                "age_hours": named[k]["age_hours"] if named[k]["seen"] else None,
            }
            for k in range(len(items))
        ]


def _concat(parts: list[np.ndarray | None]) -> np.ndarray | None:
    return None if any(p is None for p in parts) else np.concatenate(parts)  # type: ignore[arg-type]


def _entity_keys(record: NewsRecord) -> dict[str, tuple[str, str]]:
    """Entity key (Wikidata ID, else lower-cased label) -> (label, Wikidata ID)."""
    keys = {}
    for e in record.entities:
        label = str(e.get("label") or "")
        wikidata = str(e.get("wikidata_id") or "")
        key = wikidata or label.lower()
        if key:
            keys[key] = (label or key, wikidata)
    return keys


def _shared(record: NewsRecord, history: list[NewsRecord]) -> dict[str, Any]:
    """Entities, category and subcategory the news shares with the clicked news (by news ID)."""
    mine = _entity_keys(record)
    entities: dict[str, dict[str, Any]] = {}
    for h in history:
        for key in _entity_keys(h).keys() & mine.keys():
            label, wikidata = mine[key]
            entry = entities.setdefault(key, {"label": label, "wikidata_id": wikidata, "history": []})
            if h.news_id not in entry["history"]:
                entry["history"].append(h.news_id)
    return {
        "category": record.category,
        "subcategory": record.subcategory,
        "shared_entities": list(entities.values()),
        "same_category": list(
            dict.fromkeys(h.news_id for h in history if record.category and h.category == record.category)
        ),
        "same_subcategory": list(
            dict.fromkeys(
                h.news_id for h in history if record.subcategory and h.subcategory == record.subcategory
            )
        ),
    }
