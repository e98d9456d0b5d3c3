"""Why a news item was recommended, read from the torch model (the web page's reasons).

For a history and the recommended news, `Explainer.explain` returns, per recommended news:

- the fusion weight of each modality (ID, text, graph, category) for that news item, as the
  model's attention or gate fusion computed it (`_Fusion.item_weights`); None for concat fusion,
  whose MLP has no per-modality weight;
- every clicked news with the user encoder's attention on it (NRMS: the additive attention
  pooling, the same for every candidate; candidate-aware encoder: the candidate's own attention
  over the history) and the cosine of the raw text vectors, ranked by what differs per candidate
  (candidate attention, else text similarity, else the NRMS attention);
- the entities and categories it shares with the clicked news.

The ONNX graphs do not expose these intermediate values, so explanations always run the torch
model of the run (the served one when the backend is torch; loaded once beside ONNX otherwise).
The ranking path of the service does not go through here and stays as fast as before.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from newsrec_cli.serve.engine import Engine, NewsRecord, RequestError

TOP_CONTRIBUTORS = 3


class Explainer:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.ready = False
        self.error: str | None = None
        self._load_lock = threading.Lock()

    def load(self) -> None:
        """The torch run, its news inputs by ID, and the lock of the model it uses."""
        from newsrec_cli.serve.backends import TorchBackend
        from newsrec_cli.serve.export import run_news_inputs
        from newsrec_cli.train.run import load_run

        with self._load_lock:
            if self.ready:
                return
            engine = self.engine
            if engine.run is not None and isinstance(engine.backend, TorchBackend):
                self.run, self.lock = engine.run, engine.backend._lock  # the served model: share its lock
            elif engine.run_dir is not None:
                self.run, self.lock = load_run(engine.run_dir, device="cpu"), threading.Lock()
            else:
                raise RequestError(409, "this export names no run directory: explanations need the torch run")
            self.model = self.run.model.eval()
            ids, self.inputs, _ = run_news_inputs(self.run)
            self.rows = {id_: i for i, id_ in enumerate(ids)}
            text = self.inputs.text
            self.unit_text = None
            if text is not None:
                norms = np.linalg.norm(text, axis=1, keepdims=True)
                self.unit_text = (text / np.maximum(norms, 1e-12)).astype(np.float32)
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

    def explain(
        self, history: list[str], items: list[str], user_id: str | None = None, top: int = TOP_CONTRIBUTORS
    ) -> dict[str, Any]:
        import torch

        from newsrec_cli.serve.backends import encode_news_with

        if not self.ready:
            self.load()
        engine = self.engine
        unknown = [i for i in dict.fromkeys([*history, *items]) if i not in self.rows]
        if unknown:
            raise RequestError(
                422,
                {
                    "message": "news unknown to the model's run (ingested news are not explained)",
                    "unknown": unknown,
                },
            )
        if not items:
            raise RequestError(422, "items is empty: give the recommended news IDs to explain")
        used = history[max(0, len(history) - engine.history) :]  # the most recent clicks, as served
        H, K = len(used), len(items)
        rows = np.asarray([self.rows[i] for i in [*used, *items]], np.int64)
        users = engine.vocabs.get("users")
        user_row = users.get(user_id) if users is not None and user_id else 0
        model = self.model
        with self.lock, torch.no_grad():
            feed = {
                k: torch.from_numpy(np.ascontiguousarray(v))
                for k, v in self.inputs.rows(rows).as_dict().items()
            }
            vectors = encode_news_with(model, feed).float()  # (H+K, dim), fusion in the same order
            fusion = model.news_encoder.fusion.item_weights()
            fusion = None if fusion is None else fusion.cpu().numpy()
            clicked = vectors[:H][None] if H else torch.zeros(1, 1, vectors.shape[1])
            mask = torch.ones(1, max(H, 1), dtype=torch.bool) if H else torch.zeros(1, 1, dtype=torch.bool)
            state = model.encode_user_vectors(clicked, mask, torch.tensor([user_row]))
            candidates = vectors[H:][None]  # (1, K, dim)
            scores = model.score(state, candidates)[0].numpy()
            _, per_candidate = model.user_vectors(state, candidates)
            if not H:
                attention = None
            elif per_candidate is not None:
                attention = per_candidate[0].float().numpy()  # (K, H)
            else:
                weights = model.user_encoder.history_weights(clicked[..., : model.news_dim], mask)
                attention = np.broadcast_to(weights[0].float().numpy(), (K, H))
        similarity = None
        if self.unit_text is not None and H:
            similarity = self.unit_text[rows[H:]] @ self.unit_text[rows[:H]].T  # (K, H)
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
            "items": out,
        }


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
