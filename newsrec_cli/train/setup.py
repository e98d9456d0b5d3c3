"""Set-up of a training run, before the first step: which run (new, resumed or started over),
the data and its validation split, and the model with its optimizer.

Each phase is a function of the previous one's result, so `train()` reads top to bottom.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from newsrec_cli import clock
from newsrec_cli.errors import InputError, SettingsError
from newsrec_cli.mind import Impressions, MindDataset, load_dataset
from newsrec_cli.mind.popularity import PopularityCounts, PopularityView, protocol_view
from newsrec_cli.model.assembly import build_model
from newsrec_cli.model.finetune import cache_texts, store_template
from newsrec_cli.model.inputs import needed_news
from newsrec_cli.model.recommender import NewsRecommender
from newsrec_cli.objective.history_samples import HistorySamples, history_impressions
from newsrec_cli.objective.param_groups import param_groups
from newsrec_cli.objective.samples import ClickSamples, click_samples
from newsrec_cli.runs import checkpoint
from newsrec_cli.runs.config import read_config, settings_of
from newsrec_cli.runs.context import DataContext, prepare_context
from newsrec_cli.runs.files import CONFIG, LAST, clear_run
from newsrec_cli.runs.records import TrainJob
from newsrec_cli.settings import DataSettings, GraphSettings, TrainSettings

# Settings a resumed run may change: when to stop and the hardware, never what is trained.
CHANGEABLE_ON_RESUME = ("time_budget", "checkpoint_every", "device", "workers", "threads", "eval_batch_size")
# A history positive's pool of negatives holds this many times --negatives (K are drawn each epoch).
HISTORY_POOL = 4
# The budget is of one command: a resume has its own (none unless given), never the spent one.
PER_COMMAND = ("time_budget",)


@dataclass
class RunRequest:
    """Which run to train: paths and settings (from config.json on resume), and last.pt if any."""

    out: Path
    data: Path
    store: str | Path | None
    graph: str | Path | None
    settings: TrainSettings
    data_settings: DataSettings
    graph_settings: GraphSettings
    resume: bool
    saved: dict[str, Any] | None  # last.pt of a resumed run
    trained_dim: int | None  # on resume, the store must keep the dimension the run used
    started: float  # clock.monotonic() when the run began (for --time-budget)


@dataclass
class TrainingData:
    """The dataset, its training and validation impressions, and the click samples to train on."""

    dataset: MindDataset
    train: Impressions
    valid: Impressions
    validation: str  # how validation was split off, for the user
    samples: ClickSamples  # clicks of `fit`
    fit: Impressions  # what the batches read: `train`, then any history samples as impressions
    history: HistorySamples | None = None  # --history-positives
    popularity: PopularityCounts | None = None  # counts of the training impressions (--use-popularity)
    valid_popularity: PopularityView | None = None  # what validation reads (--valid-protocol)


@dataclass
class ModelParts:
    """The model and what it is trained with."""

    context: DataContext
    lacking: list[str]  # news without a text vector (the learned missing vector stands in)
    model: NewsRecommender
    optimizer: torch.optim.Optimizer
    train_users: np.ndarray | None  # user-ID row of each impression of `TrainingData.fit`
    valid_users: np.ndarray | None
    cached_tokens: int = 0  # tokens of the news texts the fine-tuned text layers run over
    cached_news: int = 0


def open_run(job: TrainJob, *, main: bool = True) -> RunRequest:
    """The run to train; with `resume`, its stored settings and paths and its last.pt.

    Only the `main` process (rank 0 of a distributed run) clears the folder (`overwrite`) and
    checks that it holds no other run: the others would see rank 0's files as they appear.
    """
    out, data, store, graph = job.out, job.data, job.store, job.graph
    settings, data_settings, graph_settings = job.settings, job.data_settings, job.graph_settings
    saved: dict[str, Any] | None = None
    trained_dim: int | None = None
    if job.resume and job.overwrite:
        raise SettingsError("train: --resume continues the run in --out, --overwrite deletes it; choose one")
    if job.resume:
        config, settings, data_settings, graph_settings = resume_settings(out, settings)
        # A run killed before its first last.pt has only config.json: it restarts from step 0.
        saved = checkpoint.load(out / LAST) if (out / LAST).exists() else None
        data = Path(data) if data else Path(config["data"]["path"])
        store = store or config["embeddings"]["path"]
        graph = graph or config["graph"]["path"]
        trained_dim = config["embeddings"].get("dim")
    elif not main:
        pass
    elif job.overwrite:
        clear_run(out)
    elif (out / CONFIG).exists() or (out / LAST).exists():
        raise InputError(
            "already holds a run: continue it with --resume, start over with --overwrite, "
            "or choose another --out",
            path=out,
        )
    if data is None:
        raise SettingsError("train: a dataset folder is needed")
    return RunRequest(
        out=out,
        data=Path(data),
        store=store,
        graph=graph,
        settings=settings,
        data_settings=data_settings,
        graph_settings=graph_settings,
        resume=job.resume,
        saved=saved,
        trained_dim=trained_dim,
        started=clock.monotonic(),
    )


def resume_settings(
    out: Path, settings: TrainSettings
) -> tuple[dict[str, Any], TrainSettings, DataSettings, GraphSettings]:
    """Settings stored in the run; only stop and hardware settings may change on resume, and only
    those given (`settings.model_fields_set`: a flag, the TOML file or the environment). A value
    left at its default is no request: the run keeps what it recorded (threads, checkpoint_every),
    so `--resume --out RUN` alone continues with every setting of the run. The time budget is
    the exception: it is this command's (`PER_COMMAND`)."""
    config = read_config(out)
    stored, data_settings, graph_settings = settings_of(config, out / CONFIG)
    given = [
        name for name in CHANGEABLE_ON_RESUME if name in settings.model_fields_set or name in PER_COMMAND
    ]
    merged = stored.model_copy(update={name: getattr(settings, name) for name in given})
    return config, merged, data_settings, graph_settings


def load_training_data(run: RunRequest) -> TrainingData:
    """Training and validation impressions (never a random split of one impression's candidates)."""
    settings, data_settings = run.settings, run.data_settings
    dataset = load_dataset(run.data, on_bad_lines=data_settings.on_bad_lines)
    train_imps, valid_imps, validation = dataset.train_valid(
        data_settings.split,
        data_settings.valid_days,
        data_settings.valid_fraction,
        data_settings.seed,
        data_settings.select_on,
    )
    for name, imps in (("training", train_imps), ("validation", valid_imps)):
        if not imps.labeled:
            raise InputError(
                f"the {name} impressions have no click labels (NewsID-0/1)", path=imps.source or run.data
            )
    if settings.valid_impressions and len(valid_imps) > settings.valid_impressions:
        pick = np.random.default_rng(settings.seed).choice(
            len(valid_imps), settings.valid_impressions, replace=False
        )
        valid_imps = valid_imps.subset(np.sort(pick))
        validation += f"; validating on a fixed sample of {settings.valid_impressions} impressions"
    fit, history = train_imps, None
    if settings.history_positives:
        history = history_impressions(
            train_imps,
            news_categories(dataset, train_imps),
            per_click=settings.history_positives,
            pool=HISTORY_POOL * settings.negatives,
            context=settings.history,
            negatives=settings.history_negatives,
            seed=settings.seed,
        )
        fit = Impressions.concat([train_imps, history.impressions])
    samples = click_samples(fit)
    if len(samples) == 0:
        raise InputError("no click with an unclicked candidate beside it: nothing to train on", path=run.data)
    popularity = valid_popularity = None
    if settings.use_popularity:
        # Each training impression sees the training impressions strictly before its time.
        popularity = PopularityCounts.from_impressions(
            train_imps, half_life_hours=settings.popularity_half_life, prior=settings.popularity_prior
        )
        if settings.valid_protocol == "offline":  # the same counts, frozen at their end: built once
            valid_popularity = PopularityView(popularity, popularity.end + 1)
        else:
            valid_popularity = protocol_view(
                settings.valid_protocol,
                train_imps,
                valid_imps,
                half_life_hours=settings.popularity_half_life,
                prior=settings.popularity_prior,
            )
    return TrainingData(
        dataset, train_imps, valid_imps, validation, samples, fit, history, popularity, valid_popularity
    )


def news_categories(dataset: MindDataset, imps: Impressions) -> np.ndarray:
    """The category code of each news index of `imps` (0: unknown), int64 [news vocabulary]."""
    news = dataset.news
    codes: dict[str, int] = {}
    return np.fromiter(
        (
            codes.setdefault(news.category[news.index[id_]], len(codes) + 1) if id_ in news.index else 0
            for id_ in imps.news_vocab.ids
        ),
        dtype=np.int64,
        count=len(imps.news_vocab),
    )


def build_parts(run: RunRequest, data: TrainingData, device: torch.device) -> ModelParts:
    """Vocabularies, text vectors, graph nodes and categories, then the seeded model and AdamW."""
    settings = run.settings
    context, lacking = prepare_context(
        settings,
        data.dataset,
        data.train,
        data.valid,
        store=run.store,
        graph=run.graph,
        trained_dim=run.trained_dim,
    )
    torch.manual_seed(settings.seed)
    model = build_model(settings, run.graph_settings, context).to(device)
    model.attach(context.features)
    cached_tokens = cached_news = 0
    if model.news_encoder.tower is not None:
        # Tokenise once and run the frozen text layers once per news; a step runs only the last K.
        cached_tokens = cache_texts(
            model,
            data.dataset.news,
            data.dataset.news_vocab.ids,
            needed_news(data.train, data.valid),
            store_template(context.text_meta or {}),
        )
        cached_news = len(model.news_encoder.tower.cached_news)
    # fused: one kernel over all parameters; the for-loop version costs ~100 ms a step on CPU at
    # MIND-small scale (the news-ID table alone holds millions of weights).
    optimizer = torch.optim.AdamW(
        param_groups(model, settings.weight_decay, settings.finetune_lr / settings.lr),
        lr=settings.lr,
        fused=device.type in ("cpu", "cuda"),
    )
    return ModelParts(
        context=context,
        lacking=lacking,
        model=model,
        optimizer=optimizer,
        train_users=user_rows(settings, context.vocabs, data.fit),
        valid_users=user_rows(settings, context.vocabs, data.valid),
        cached_tokens=cached_tokens,
        cached_news=cached_news,
    )


def user_rows(settings: TrainSettings, vocabs: Any, imps: Impressions) -> np.ndarray | None:
    """The user-ID table row of each impression's user (None without a user-ID embedding)."""
    if not settings.use_user_id or vocabs.users is None:
        return None
    lookup = np.fromiter(
        (vocabs.users.get(u) for u in imps.user_vocab.ids), dtype=np.int64, count=len(imps.user_vocab)
    )
    return lookup[imps.users.astype(np.int64)]
