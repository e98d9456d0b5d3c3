"""Loading a trained run back: its model with the best weights, settings, vocabularies, store and graph.

`load_run` needs nothing but the run folder (see `files.py`) and the store and graph it names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from newsrec_cli.embed.store import EmbeddingStore
from newsrec_cli.errors import InputError
from newsrec_cli.mind import Impressions, MindDataset, Vocab
from newsrec_cli.model.assembly import build_model, resolve_device
from newsrec_cli.model.finetune import encode_dataset_news, store_template
from newsrec_cli.model.recommender import NewsRecommender
from newsrec_cli.runs import checkpoint
from newsrec_cli.runs.config import read_config, settings_of
from newsrec_cli.runs.context import (
    DataContext,
    Vocabularies,
    check_coverage,
    check_store_texts,
    needed_news,
    news_features,
    open_store,
    text_vectors,
)
from newsrec_cli.runs.files import CONFIG, MODEL, NEWS_TABLE, load_news_table
from newsrec_cli.settings import DataSettings, GraphSettings, TrainSettings

RUN_STORE_OPTION = "--run-embeddings"


def _open_run_store(
    run_dir: Path, config: dict[str, Any], path: Path | None, *, given: bool
) -> EmbeddingStore:
    """The run's text store: config.json's path, or the one given in its place (checked to be the same kind)."""
    if path is None:
        raise InputError(
            f"the run used text vectors but config.json names no store; give it with {RUN_STORE_OPTION} STORE",
            path=run_dir / CONFIG,
        )
    if not given and not path.exists():
        raise InputError(
            f"the run's text store {path} (named in {run_dir / CONFIG}) is not there; if it moved, "
            f"give where it is now with {RUN_STORE_OPTION} STORE",
            path=path,
        )
    opened = open_store(path)
    signature = config.get("embeddings", {}).get("signature")
    diffs = [
        f"{name} {opened.meta.get(name)!r}, the run's {want!r}"
        for name, want in (signature.items() if given and signature else ())
        if opened.meta.get(name) != want
    ]
    if diffs:
        raise InputError(
            f"is not the store this run was trained with ({'; '.join(diffs)}, as {run_dir / CONFIG} records)",
            path=path,
        )
    return opened


@dataclass
class LoadedRun:
    """A trained run, ready to score: the model (eval mode), its settings and vocabularies.

    The model starts attached to the run's own news vocabulary; `attach_dataset` points it at
    another dataset's news (what `score_impressions` does), after which news indices of
    `encode_news` are that dataset's.
    """

    run_dir: Path
    model: NewsRecommender
    settings: TrainSettings
    data_settings: DataSettings
    graph_settings: GraphSettings
    vocabs: Vocabularies
    config: dict[str, Any]
    store_path: Path | None
    graph_path: Path | None
    device: torch.device
    checkpoint: dict[str, Any] = field(default_factory=dict)
    text_store: EmbeddingStore | None = None  # the run's text store, opened and checked
    graph_index: dict[str, int] | None = None  # news ID -> node of the run's graph
    _attached: Vocab | None = None  # the news vocabulary the model is attached to
    _attached_size: int = 0
    text_check: Any = None  # TextCheck of the store against the last dataset attached
    _finetuned: np.ndarray = field(
        default_factory=lambda: np.zeros(0, dtype=np.int64)
    )  # rows the tower encoded

    @property
    def finetuned(self) -> bool:
        """Whether the run fine-tuned its text model (--finetune-text): its news vectors need the
        news texts, so only `attach_dataset` gives them."""
        return self.model.news_encoder.tower is not None

    @property
    def text_dim(self) -> int | None:
        return self.config.get("embeddings", {}).get("dim")

    def attach_dataset(self, dataset: MindDataset, *needed: Impressions) -> None:
        """Point the model at `dataset`'s news vocabulary; the news of `needed` must have text
        vectors (MissingVectorsError otherwise, unless the run allows missing ones)."""
        must = needed_news(*needed) if needed else np.zeros(0, dtype=np.int64)
        vocab = dataset.news_vocab
        if self.text_store is not None and len(must):
            # The store's vectors must stand for the texts this dataset gives those news.
            self.text_check = check_store_texts(
                self.text_store, dataset.news, [vocab.ids[i] for i in must], data=dataset.root
            )
        if self._attached is not vocab or self._attached_size != len(vocab):
            text = None
            if self.model.news_encoder.text is not None:
                text, _ = text_vectors(
                    self.text_store,
                    vocab.ids,
                    must,
                    missing=self.settings.missing,
                    expected_dim=self.text_dim,
                )
            self.model.attach(
                news_features(vocab, dataset.news, self.vocabs, text=text, graph_index=self.graph_index)
            )
            self._attached, self._attached_size = vocab, len(vocab)
            self._finetuned = np.zeros(0, dtype=np.int64)
        if self.model.news_encoder.tower is not None and len(must):
            # The store's vectors stand in until then; the run's own layers encode what is scored.
            todo = np.setdiff1d(must, self._finetuned)
            encode_dataset_news(
                self.model, dataset.news, vocab.ids, todo, store_template(self.text_store.meta)
            )
            self._finetuned = np.union1d(self._finetuned, todo)
        elif self.model.news_encoder.text_present is not None:
            present = self.model.news_encoder.text_present.cpu().numpy()
            check_coverage(
                present, vocab.ids, must, missing=self.settings.missing, store=self.store_path or ""
            )

    def user_rows(self, imps: Impressions) -> np.ndarray | None:
        """Rows of the user-ID table for each impression (0 = a user not seen in training)."""
        if self.model.user_encoder.user_embedding is None or self.vocabs.users is None:
            return None
        lookup = np.fromiter(
            (self.vocabs.users.get(u) for u in imps.user_vocab.ids),
            dtype=np.int64,
            count=len(imps.user_vocab),
        )
        return lookup[imps.users.astype(np.int64)]


def load_run(
    run_dir: str | Path,
    device: str = "auto",
    *,
    store: str | Path | None = None,
    graph: str | Path | None = None,
    weights: str = MODEL,
) -> LoadedRun:
    """Load a run directory: the best weights (model.pt), settings, vocabularies, store and graph.

    `store`/`graph` override the paths config.json names (e.g. after moving them).
    """
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    train_settings, data_settings, graph_settings = settings_of(config, run_dir / CONFIG)
    vocabs_users = bool(train_settings.use_user_id)
    news_vocab, news_table = load_news_table(run_dir / NEWS_TABLE)
    vocabs = Vocabularies.load(run_dir, users=vocabs_users, news=news_vocab)
    store_path = Path(store) if store else _path_or_none(config.get("embeddings", {}).get("path"))
    graph_path = Path(graph) if graph else _path_or_none(config.get("graph", {}).get("path"))
    modal = config.get("model", {}).get("modalities", [])
    opened_store = None
    text = None
    if "text" in modal:
        opened_store = _open_run_store(run_dir, config, store_path, given=store is not None)
        text, _ = text_vectors(
            opened_store,
            news_vocab.ids,
            np.zeros(0, dtype=np.int64),
            missing="learned",
            expected_dim=config.get("embeddings", {}).get("dim"),
        )
    news_graph, graph_index = None, None
    if "graph" in modal:
        if graph_path is None:
            raise InputError("the run used a graph but config.json names none", path=run_dir / CONFIG)
        from newsrec_cli.graph import load_graph  # torch_geometric loads only when a graph is used

        news_graph = load_graph(graph_path)
        graph_index = news_graph.news_index
    features = news_features(news_vocab, news_table, vocabs, text=text, graph_index=graph_index)
    context = DataContext(
        vocabs=vocabs,
        features=features,
        text_dim=text.matrix.shape[1] if text else None,
        graph=news_graph,
        text_meta=dict(opened_store.meta) if opened_store is not None else None,
    )
    if "graph" not in modal:
        train_settings = train_settings.model_copy(update={"use_graph": False})
    model = build_model(train_settings, graph_settings, context)
    state = checkpoint.load(run_dir / weights)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as exc:
        raise InputError(
            f"weights do not fit the model config.json describes ({str(exc).splitlines()[0]})",
            path=run_dir / weights,
        ) from None
    resolved = resolve_device(device)
    model.to(resolved)
    model.attach(features)  # re-attach so the buffers follow the device
    model.eval()
    run = LoadedRun(
        run_dir=run_dir,
        model=model,
        settings=train_settings,
        data_settings=data_settings,
        graph_settings=graph_settings,
        vocabs=vocabs,
        config=config,
        store_path=store_path,
        graph_path=graph_path,
        device=resolved,
        checkpoint={k: v for k, v in state.items() if k != "model"},
        text_store=opened_store,
        graph_index=graph_index,
        _attached=news_vocab,
        _attached_size=len(news_vocab),
    )
    return run


def _path_or_none(value: Any) -> Path | None:
    return Path(value) if value else None
