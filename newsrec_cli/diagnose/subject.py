"""The model under diagnosis: a trained run directory, or a fresh model built from settings.

Both end as a `Subject`: the model with the news of a dataset attached, its train settings, and
two samples of impressions (validation, for the forward checks; training, for the gradient
steps). A fresh model is built exactly as `newsrec train` would build it (`build_model` over the
same vocabularies and per-news inputs), so `--init` checks a configuration before any training.

Two score-head knobs have no train setting yet: the initial scale and the cosine head's
normalisation; `[diagnose] scale` and `[diagnose] normalize` set them on a fresh model
(`adapters`), which is how the original failure (un-normalised vectors x 10) is reproduced.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from newsrec_cli.diagnose.adapters import drop_normalisation, head_name, set_scale
from newsrec_cli.diagnose.forward import ModelOutputs, run_model, sample_impressions
from newsrec_cli.diagnose.saturation import Scoring
from newsrec_cli.errors import InputError
from newsrec_cli.mind import Impressions, MindDataset, Vocab, load_dataset
from newsrec_cli.model.assembly import build_model, resolve_device
from newsrec_cli.model.finetune import cache_texts, store_template
from newsrec_cli.model.inputs import needed_news
from newsrec_cli.model.recommender import NewsRecommender
from newsrec_cli.runs.context import prepare_context
from newsrec_cli.runs.loading import load_run
from newsrec_cli.settings import DataSettings, GraphSettings, TrainSettings


@dataclass
class Subject:
    """A model ready to be run on `valid` and stepped on `train` (news indices of `dataset`)."""

    model: NewsRecommender
    settings: TrainSettings
    dataset: MindDataset
    valid: Impressions
    train: Impressions
    origin: str
    valid_user_rows: np.ndarray | None = None
    train_user_rows: np.ndarray | None = None

    @property
    def scoring(self) -> Scoring:
        head = self.model.scorer
        return Scoring(kind=head_name(head), scale=float(head.scale.detach()), loss=self.settings.loss)

    def valid_outputs(self) -> ModelOutputs:
        """Logits and vectors of the model on every candidate of the validation sample."""
        return run_model(
            self.model, self.valid, history=self.settings.history, user_rows=self.valid_user_rows
        )


def from_init(
    data: Path,
    *,
    store: Path | None,
    graph: Path | None,
    train_settings: TrainSettings,
    data_settings: DataSettings,
    graph_settings: GraphSettings,
    sample: int,
    seed: int,
    scale: float | None = None,
    normalize: bool | None = None,
) -> Subject:
    """A freshly initialised model for `data` (train settings' seed), as `newsrec train` builds it.

    `scale` and `normalize=False` change its score head (see `adapters`).
    """
    dataset = load_dataset(data, on_bad_lines=data_settings.on_bad_lines)
    train, valid, _ = dataset.train_valid(
        data_settings.split,
        data_settings.valid_days,
        data_settings.valid_fraction,
        data_settings.seed,
        data_settings.select_on,
    )
    settings = train_settings
    context, _ = prepare_context(settings, dataset, train, valid, store=store, graph=graph)
    features = context.features
    torch.manual_seed(settings.seed)
    model = build_model(settings, graph_settings, context)
    if normalize is False:
        drop_normalisation(model)
    if scale is not None:
        set_scale(model, scale)
    model.to(resolve_device(settings.device))
    model.attach(features)  # buffers follow the device
    users = context.vocabs.users if model.user_encoder.user_embedding is not None else None
    subject = _subject(model, settings, dataset, train, valid, sample, seed, "fresh model", users)
    _cache_text(subject, context.text_meta)
    return subject


def from_run(
    run_dir: Path,
    *,
    data: Path | None,
    sample: int,
    seed: int,
    device: str = "auto",
    store: Path | None = None,
) -> Subject:
    """A trained run on `data` (default: the dataset its config.json names), validation split as trained.

    `store`: the run's text store where it is now, in place of the path config.json names.
    """
    run = load_run(run_dir, device=device, store=store)
    path = data if data is not None else run.config.get("data", {}).get("path")
    if not path:
        raise InputError("config.json names no dataset; pass --data DATA", path=run_dir / "config.json")
    ds = run.data_settings
    dataset = load_dataset(path, on_bad_lines=ds.on_bad_lines)
    train, valid, _ = dataset.train_valid(ds.split, ds.valid_days, ds.valid_fraction, ds.seed, ds.select_on)
    subject = _subject(run.model, run.settings, dataset, train, valid, sample, seed, f"run {run_dir}", None)
    run.attach_dataset(dataset, subject.valid, subject.train)
    _cache_text(subject, run.text_store.meta if run.text_store is not None else None)
    subject.valid_user_rows = run.user_rows(subject.valid)
    subject.train_user_rows = run.user_rows(subject.train)
    return subject


def _cache_text(subject: Subject, meta: dict | None) -> None:
    """A fine-tuned text tower (--finetune-text) runs in training steps only over cached news:
    cache the sampled impressions' news, so the gradient check reaches its layers."""
    if subject.model.news_encoder.tower is None:
        return
    news = needed_news(subject.train, subject.valid)
    ids = subject.dataset.news_vocab.ids
    cache_texts(subject.model, subject.dataset.news, ids, news, store_template(meta or {}))


def _user_rows(users: Vocab, imps: Impressions) -> np.ndarray:
    """Row of the user-ID table of each impression's user (0: not a training user)."""
    lookup = np.fromiter(
        (users.get(u) for u in imps.user_vocab.ids), dtype=np.int64, count=len(imps.user_vocab)
    )
    return lookup[imps.users.astype(np.int64)]


def _subject(
    model: NewsRecommender,
    settings: TrainSettings,
    dataset: MindDataset,
    train: Impressions,
    valid: Impressions,
    sample: int,
    seed: int,
    origin: str,
    users: Vocab | None,
) -> Subject:
    valid_sample = sample_impressions(valid, sample, seed)
    train_sample = sample_impressions(train, sample, seed + 1)
    if len(valid_sample) == 0:
        raise InputError("no labelled validation impressions to run the model on", path=dataset.root)
    return Subject(
        model=model,
        settings=settings,
        dataset=dataset,
        valid=valid_sample,
        train=train_sample,
        origin=origin,
        valid_user_rows=_user_rows(users, valid_sample) if users is not None else None,
        train_user_rows=_user_rows(users, train_sample) if users is not None else None,
    )
