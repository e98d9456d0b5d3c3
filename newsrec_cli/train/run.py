"""A run directory: building a fresh model, writing config.json, loading a trained run back.

Layout (see "The pipeline and its files" in the README): config.json (every effective setting, the data, store and graph paths),
vocab_*.txt / vocab_news.tsv, model.pt (best weights), last.pt (resume state), history.jsonl,
tensorboard/. `load_run` needs nothing but this folder and the store and graph it names.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from newsrec_cli import __version__, atomic
from newsrec_cli.embed.store import SIGNATURE_FIELDS, EmbeddingStore
from newsrec_cli.errors import InputError, SettingsError
from newsrec_cli.manifests import read_manifest
from newsrec_cli.mind import Impressions, MindDataset, NewsTable, Vocab
from newsrec_cli.model.candidate_user_encoder import CandidateUserEncoder
from newsrec_cli.model.category_embedding import CategoryEmbedding
from newsrec_cli.model.content_prior import ContentPrior
from newsrec_cli.model.features import NewsFeatures
from newsrec_cli.model.fusion import build_fusion
from newsrec_cli.model.graph_modality import GraphModality
from newsrec_cli.model.id_embedding import NewsIdEmbedding
from newsrec_cli.model.news_encoder import NewsEncoder
from newsrec_cli.model.popularity import PopularityHead
from newsrec_cli.model.recommender import NewsRecommender
from newsrec_cli.model.scorer import ScoringHead
from newsrec_cli.model.text_projection import TextProjection
from newsrec_cli.model.user_encoder import UserEncoder
from newsrec_cli.plural import counted
from newsrec_cli.settings import DataSettings, GraphSettings, TrainSettings
from newsrec_cli.train import checkpoint
from newsrec_cli.train.context import (
    VOCAB_FILES,
    Vocabularies,
    build_vocabularies,
    check_coverage,
    check_modalities,
    check_store_texts,
    needed_news,
    news_features,
    open_store,
    text_vectors,
)
from newsrec_cli.train.finetune import set_centres

CONFIG = "config.json"
MODEL = "model.pt"
LAST = "last.pt"
HISTORY = "history.jsonl"
NEWS_TABLE = "vocab_news.tsv"
TENSORBOARD = "tensorboard"
RUN_FORMAT = "newsrec-run"


@dataclass
class DataContext:
    """What `build_model` needs from the data: vocabularies, per-news inputs, text size, graph."""

    vocabs: Vocabularies
    features: NewsFeatures
    text_dim: int | None = None
    graph: Any = None  # newsrec_cli.graph.NewsGraph or None
    text_check: Any = None  # newsrec_cli.embed.store.TextCheck of the store against the dataset
    text_meta: dict[str, Any] | None = None  # the store's meta.json (provider, model, template)


def prepare_context(
    settings: TrainSettings,
    dataset: MindDataset,
    train: Impressions,
    valid: Impressions,
    *,
    store: str | Path | None,
    graph: str | Path | None,
    trained_dim: int | None = None,
) -> tuple[DataContext, list[str]]:
    """Vocabularies, text vectors, graph nodes and categories for a fresh model, and the needed
    news the store lacks (allowed only with missing="learned"). `newsrec train` and `diagnose
    --init` both build their model from this, so a checked configuration is the trained one.
    """
    vocabs = build_vocabularies(dataset.news_vocab, dataset.news, train, users=settings.use_user_id)
    text, lacking, text_dim, text_check, text_meta = None, [], None, None, None
    if settings.use_text:
        if store is None:
            raise SettingsError(
                "train: text vectors need --embeddings STORE (or turn text off: --no-use-text)"
            )
        needed = needed_news(train, valid)
        if settings.missing == "error":
            # No store can hold text for news that news.tsv lacks: say so rather than "embed them".
            dataset.require_rows(train, valid)
        opened = open_store(store)
        text_check = check_store_texts(
            opened, dataset.news, [dataset.news_vocab.ids[i] for i in needed], data=dataset.root
        )
        text, lacking = text_vectors(
            opened,
            dataset.news_vocab.ids,
            needed,
            missing=settings.missing,
            expected_dim=trained_dim,
        )
        text_dim = opened.dim
        text_meta = dict(opened.meta)
        if settings.finetune_text and text_check.unverified:
            raise InputError(
                f"--finetune-text reads each news' text again, but {counted(text_check.unverified, 'vector')} of "
                "the store cannot be checked against its text (no fingerprint); embed it again with newsrec embed",
                path=opened.path,
            )
    news_graph = None
    if graph is not None and settings.use_graph:
        from newsrec_cli.graph import load_graph  # torch_geometric loads only when a graph is used

        news_graph = load_graph(graph)
    features = news_features(
        dataset.news_vocab,
        dataset.news,
        vocabs,
        text=text,
        graph_index=news_graph.news_index if news_graph is not None else None,
        known=needed_news(train),
    )
    context = DataContext(
        vocabs=vocabs,
        features=features,
        text_dim=text_dim,
        graph=news_graph,
        text_check=text_check,
        text_meta=text_meta,
    )
    return context, lacking


def resolve_device(device: str) -> torch.device:
    """auto: CUDA when present, else CPU; anything else as torch spells it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise SettingsError(
            f"train.device = {device!r}: not a device (auto, cpu, cuda, cuda:1, ...)"
        ) from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise SettingsError(f"train.device = {device!r}: CUDA is not available on this machine")
    return resolved


def modalities(settings: TrainSettings, *, has_graph: bool) -> list[str]:
    """The modalities a model really gets (graph only when a graph was given)."""
    wanted = {
        "id": settings.use_id,
        "text": settings.use_text,
        "graph": settings.use_graph and has_graph,
        "category": settings.use_category,
    }
    return [name for name, on in wanted.items() if on]


def build_model(
    settings: TrainSettings, graph_settings: GraphSettings, context: DataContext
) -> NewsRecommender:
    """A freshly initialised recommender with `context.features` attached."""
    check_modalities(
        settings.use_id,
        settings.use_text,
        settings.use_graph and context.graph is not None,
        settings.use_category,
    )
    if settings.dim % settings.heads:
        raise SettingsError(f"train.dim = {settings.dim} must be divisible by train.heads = {settings.heads}")
    if settings.use_text and context.text_dim is None:
        raise SettingsError("train.use_text is on but no embedding store was given (--embeddings STORE)")
    names = modalities(settings, has_graph=context.graph is not None)
    dim = settings.dim
    tower = None
    if settings.finetune_text and "text" in names:
        from newsrec_cli.train.finetune import build_tower

        tower = build_tower(settings.finetune_text, context.text_meta or {})
        if tower.dim != context.text_dim:
            raise SettingsError(
                f"train.finetune_text: the text model gives {tower.dim}-d vectors, the store holds "
                f"{context.text_dim}-d ones"
            )
    elif settings.finetune_text:
        raise SettingsError("train.finetune_text needs the text modality (--use-text and --embeddings)")
    graph = None
    if "graph" in names:
        from newsrec_cli.graph import build_graph_encoder

        graph = GraphModality(build_graph_encoder(graph_settings, context.graph, dim), dim)
    news_encoder = NewsEncoder(
        dim,
        build_fusion(settings.fusion, names, dim, settings.dropout),
        id_embedding=NewsIdEmbedding(len(context.vocabs.ids), dim, settings.id_dropout)
        if "id" in names
        else None,
        text=TextProjection(
            context.text_dim, dim, settings.text_projection, settings.dropout, settings.text_dropout
        )
        if "text" in names and context.text_dim
        else None,
        graph=graph,
        category=CategoryEmbedding(len(context.vocabs.categories), len(context.vocabs.subcategories), dim)
        if "category" in names
        else None,
        tower=tower,
    )
    users = context.vocabs.users
    encoder = CandidateUserEncoder if settings.user_encoder == "candidate" else UserEncoder
    user_encoder = encoder(
        dim,
        settings.heads,
        settings.dropout,
        num_users=len(users) if settings.use_user_id and users else None,
    )
    prior = (
        ContentPrior(settings.prior_weight, context.text_dim if settings.prior_adapter else None)
        if settings.content_prior and news_encoder.text
        else None
    )
    model = NewsRecommender(
        news_encoder,
        user_encoder,
        ScoringHead(settings.scoring, dim, settings.score_scale),
        prior=prior,
        aux_categories=len(context.vocabs.categories) if settings.aux_category > 0 else 0,
    )
    if settings.use_popularity:
        model.popularity = PopularityHead(settings.popularity_head)
    model.attach(context.features)
    set_centres(model)
    return model


# ----------------------------------------------------------------------------- run files


def save_news_table(path: Path, news_vocab: Vocab, news: NewsTable) -> None:
    """The run's news vocabulary with each news' category and subcategory (tab-separated)."""
    lines = []
    for id_ in news_vocab.ids[1:]:
        row = news.index.get(id_)
        cat, sub = (news.category[row], news.subcategory[row]) if row is not None else ("", "")
        lines.append(f"{id_}\t{cat}\t{sub}\n")
    atomic.write_text(path, "".join(lines))


def load_news_table(path: Path) -> tuple[Vocab, NewsTable]:
    if not path.is_file():
        raise InputError("missing news vocabulary of the run", path=path)
    table = NewsTable()
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
        if not line:
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise InputError("expected NewsID, category, subcategory", path=path, line=number)
        table.append((parts[0], parts[1], parts[2], "", "", ""), [], [])
    return Vocab(table.ids), table


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


def clear_run(run_dir: Path) -> list[Path]:
    """Delete the files a run (and `evaluate` on it) writes in `run_dir`; other files stay.

    Returns what was deleted. For `newsrec train --overwrite`.
    """
    if not run_dir.is_dir():
        return []
    names = {
        CONFIG,
        MODEL,
        LAST,
        HISTORY,
        NEWS_TABLE,
        *VOCAB_FILES.values(),
        "prediction.txt",
        "prediction.zip",
        "prediction-replay.txt",
        "prediction-replay.zip",
    }
    removed = []
    for path in sorted(run_dir.iterdir()):
        if path.name == TENSORBOARD and path.is_dir():
            shutil.rmtree(path)
        elif path.is_file() and (
            path.name in names
            or (path.name.startswith("metrics") and path.suffix == ".json")
            or path.name.startswith(atomic.TMP_PREFIX)
            or path.name.endswith(".tmp")
        ):
            path.unlink()
        else:
            continue
        removed.append(path)
    return removed


def write_json(path: Path, data: dict[str, Any]) -> None:
    """config.json in its own key order (what made the run first), through atomic.py."""
    atomic.write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def run_config(
    *,
    data: Path,
    store: Path | None,
    graph: Path | None,
    settings: TrainSettings,
    data_settings: DataSettings,
    graph_settings: GraphSettings,
    validation: str,
    model: NewsRecommender,
    context: DataContext,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Everything that made the run, JSON-ready (config.json)."""
    return {
        "format": RUN_FORMAT,
        "version": 1,
        "newsrec": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": {"path": str(data.resolve()), "validation": validation},
        "embeddings": {
            "path": str(store.resolve()) if store else None,
            "dim": context.text_dim,
            # what the store is, so that a store given in its place (it moved) can be checked
            "signature": {name: context.text_meta.get(name) for name in SIGNATURE_FIELDS}
            if context.text_meta
            else None,
        },
        "graph": {"path": str(graph.resolve()) if graph else None},
        "settings": {
            "train": settings.model_dump(mode="json"),
            "data": data_settings.model_dump(mode="json"),
            "graph": graph_settings.model_dump(mode="json"),
        },
        "model": {
            "modalities": model.news_encoder.modalities,
            "parameters": sum(p.numel() for p in model.parameters()),
            "news": len(context.vocabs.news) - 1,
            "news_with_id": len(context.vocabs.ids) - 1,
            "categories": len(context.vocabs.categories) - 1,
            "subcategories": len(context.vocabs.subcategories) - 1,
            "users": len(context.vocabs.users) - 1 if context.vocabs.users is not None else None,
        },
        **extra,
    }


def read_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / CONFIG
    if not run_dir.is_dir():
        raise InputError("run directory not found", path=run_dir)
    if not path.is_file():
        raise InputError("not a run directory (no config.json); train one with `newsrec train`", path=run_dir)
    return read_manifest(path, RUN_FORMAT, "the config.json of a run")


def settings_of(config: dict[str, Any], path: Path) -> tuple[TrainSettings, DataSettings, GraphSettings]:
    """The three settings objects a run was trained with (InputError if config.json is off)."""
    try:
        stored = config["settings"]
        return (
            TrainSettings(**stored["train"]),
            DataSettings(**stored["data"]),
            GraphSettings(**stored["graph"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(
            f"settings of the run are unreadable ({str(exc).splitlines()[0]})", path=path
        ) from None


# ----------------------------------------------------------------------------- loading a run


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
    _store: Any = None
    _graph_index: dict[str, int] | None = None
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
        if self._store is not None and len(must):
            # The store's vectors must stand for the texts this dataset gives those news.
            self.text_check = check_store_texts(
                self._store, dataset.news, [vocab.ids[i] for i in must], data=dataset.root
            )
        if self._attached is not vocab or self._attached_size != len(vocab):
            text = None
            if self.model.news_encoder.text is not None:
                text, _ = text_vectors(
                    self._store, vocab.ids, must, missing=self.settings.missing, expected_dim=self.text_dim
                )
            self.model.attach(
                news_features(vocab, dataset.news, self.vocabs, text=text, graph_index=self._graph_index)
            )
            self._attached, self._attached_size = vocab, len(vocab)
            self._finetuned = np.zeros(0, dtype=np.int64)
        if self.model.news_encoder.tower is not None and len(must):
            # The store's vectors stand in until then; the run's own layers encode what is scored.
            from newsrec_cli.train.finetune import encode_dataset_news, store_template

            todo = np.setdiff1d(must, self._finetuned)
            encode_dataset_news(self.model, dataset.news, vocab.ids, todo, store_template(self._store.meta))
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
        from newsrec_cli.graph import load_graph

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
        _store=opened_store,
        _graph_index=graph_index,
        _attached=news_vocab,
        _attached_size=len(news_vocab),
    )
    return run


def _path_or_none(value: Any) -> Path | None:
    return Path(value) if value else None
