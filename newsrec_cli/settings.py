"""Typed settings, one pydantic model per stage, and where each value came from.

Sources, lowest to highest: the defaults below, a TOML file (`--config newsrec.toml`, one table
per stage: `[train]`, `[embed]`, ...), the environment (`NEWSREC_<STAGE>_<FIELD>`, e.g.
`NEWSREC_TRAIN_LR=3e-4`) and command-line flags. `resolve()` merges them and validates once, so a
wrong value is one `SettingsError` naming the field, the value, what is allowed and its source.
"""

from __future__ import annotations

import json
import os
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from newsrec_cli.errors import SettingsError

ENV_PREFIX = "NEWSREC_"
SEED_MAX = 2**32 - 1
# Every seed reaches numpy's SeedSequence or torch.manual_seed (and optuna's RandomState): a
# negative one is a traceback there, and 2**32 and above are refused by RandomState.
Seed = Annotated[int, Field(ge=0, le=SEED_MAX)]


@dataclass(frozen=True)
class Flag:
    """How a setting reads on the command line, declared beside its type, default and description:
    its help panel (else the stage's) and its flag (else `--` + prefix + the field's name, dashed)."""

    panel: str | None = None
    name: str | None = None
    prefix: str = ""
    short: str | None = None  # a one-letter alias: -p


MODEL, POPULARITY, LOSS, SCHEDULE, RUN = (Flag(p) for p in ("model", "popularity", "loss", "schedule", "run"))
API, HASHING = Flag("api"), Flag("hashing")
# The GNN's settings sit beside the recommender's in `train`, whose --heads and --dropout are its own.
GNN = Flag("graph", prefix="graph-")


class StageSettings(BaseModel):
    """Base of the stage models: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    section: ClassVar[str] = ""
    panel: ClassVar[str | None] = None  # help panel of the fields that name none


def flag_of(model: type[StageSettings], name: str) -> Flag:
    """The command-line declaration of field `name` (its `Flag`, or the stage's defaults)."""
    return next((m for m in model.model_fields[name].metadata if isinstance(m, Flag)), Flag())


def flag_name(model: type[StageSettings], name: str) -> str:
    """The flag that sets field `name`: `--valid-days`, `--graph-encoder`, `--split-seed`."""
    flag = flag_of(model, name)
    return flag.name or "--" + flag.prefix + name.replace("_", "-")


def panel_of(model: type[StageSettings], name: str) -> str | None:
    return flag_of(model, name).panel or model.panel


class DataSettings(StageSettings):
    """Reading MIND folders and choosing the validation split."""

    section: ClassVar[str] = "data"
    panel: ClassVar[str | None] = "data"

    on_bad_lines: Literal["error", "skip"] = Field(
        "error", description="A malformed line stops the run (error) or is skipped and reported (skip)."
    )
    split: Literal["auto", "time", "impression"] = Field(
        "auto",
        description="How the selection split is cut from train/ (when valid/ does not choose): auto "
        "by time when train/ spans two days or more, else by impression; impression holds out whole "
        "impressions at random. Candidates of one impression are never split.",
    )
    valid_days: int | None = Field(
        None,
        ge=1,
        description="Split by time: the last N days of train/ choose the epoch (default: the last day). "
        "With a labelled test/, given, it is used instead of the valid/ folder.",
    )
    # The default never reports the split that chose the epoch: train/'s last day chooses and
    # valid/ is reported, or valid/ chooses when a labelled test/ is reported (mind/protocol.py).
    select_on: Literal["auto", "valid"] = Field(
        "auto",
        description="auto: choose the epoch on a split that is not reported (the last day of train/, "
        "or valid/ when a labelled test/ is reported); valid: choose on valid/ even when valid/ is "
        "the reported split (all of train/ trains; every table then says its figures are optimistic).",
    )
    valid_fraction: float = Field(
        0.1, gt=0.0, lt=1.0, description="With split=impression: the share of impressions held out."
    )
    seed: Annotated[Seed, Flag(name="--split-seed")] = Field(
        42, description="Seed of the split by impression."
    )


class SynthSettings(StageSettings):
    """The built-in synthetic MIND dataset (`newsrec data synth`)."""

    section: ClassVar[str] = "synth"

    news: int = Field(3000, ge=50, description="Number of news items.")
    users: int = Field(2000, ge=10, description="Number of users.")
    days: int = Field(7, ge=2, description="Days of impressions; the last day becomes valid/.")
    impressions_per_user: float = Field(
        2.5, ge=1.0, description="Mean impressions per user over all days (geometric: most have one or two)."
    )
    trending: float = Field(
        0.0,
        ge=0.0,
        description="Weight of a time-varying buzz in the click logit: each news' appeal rises and fades "
        "around a random hour of its publish day, seen only in the click stream (0: off).",
    )
    seed: Seed = Field(0, description="Same seed, same files, byte for byte.")


class EmbedSettings(StageSettings):
    """Text vectors for news (`newsrec embed`)."""

    section: ClassVar[str] = "embed"

    provider: Annotated[Literal["local", "openai", "hashing"], Flag(short="-p")] = Field(
        "local",
        description="local: sentence-transformers, offline; openai: the API or a compatible "
        "server; hashing: deterministic, NOT semantic, for smoke tests only.",
    )
    model: Annotated[str | None, Flag(short="-m")] = Field(
        None,
        description="Model name or path (default: all-MiniLM-L6-v2 for local, "
        "text-embedding-3-small for openai).",
    )
    template: str = Field(
        "{category} | {subcategory} | {title} | {abstract}",
        description="Text embedded per news; fields: title, abstract, category, subcategory, entities.",
    )
    batch_size: int = Field(
        64, ge=1, description="Texts per batch (local model, hashing); one saved chunk each."
    )
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    backend: Literal["auto", "torch", "onnx"] = Field(
        "auto",
        # onnx int8 on 2 CPU cores: 3.4x torch's texts/s at batch 64, cosine to torch >= 0.990 for
        # all 51,282 news of mind_recon_dev, content-baseline AUC -0.0006 (benchmarks/bench_embed.py)
        description="Runtime of the local model: torch, onnx (ONNX Runtime on CPU, exported once from "
        "the same weights), or auto (onnx on CPU when onnxruntime is installed, torch on CUDA).",
    )
    int8: bool = Field(
        True,
        description="Backend onnx: dynamic int8 quantisation (3.4x torch's speed on CPU; cosine to "
        "float >= 0.99). --no-int8: float ONNX, the torch vectors.",
    )
    threads: int | None = Field(
        None, ge=1, description="CPU threads of the local model (default: the runtime's choice)."
    )
    normalize: bool = Field(True, description="L2-normalise vectors before storing them.")
    dimensions: Annotated[int | None, API] = Field(
        None, ge=1, description="Output size: for OpenAI text-embedding-3 models, and for hashing."
    )
    base_url: Annotated[str | None, API] = Field(
        None, description="OpenAI-compatible server (vLLM, Ollama, LiteLLM)."
    )
    max_batch_tokens: Annotated[int, API] = Field(
        250_000, ge=1, description="Token budget per API request (the API allows 300k)."
    )
    max_batch_texts: Annotated[int, API] = Field(
        2048, ge=1, description="Texts per API request (the API limit)."
    )
    max_retries: Annotated[int, API] = Field(
        6, ge=0, description="Retries of a failed request (429, 5xx, timeout)."
    )
    timeout: Annotated[float, API] = Field(60.0, gt=0, description="Seconds before a request is retried.")
    hashing_dim: Annotated[int, HASHING] = Field(
        256, ge=8, description="Dimension of the hashing provider (when no dimensions)."
    )
    hashing_delay: Annotated[float, HASHING] = Field(
        0.0,
        ge=0,
        description="Seconds the hashing provider sleeps per batch (tests slow a run to interrupt it).",
    )


class GraphSettings(StageSettings):
    """The news-entity graph (`newsrec build-graph`) and its GNN encoder (used by train)."""

    section: ClassVar[str] = "graph"

    min_confidence: float = Field(0.0, ge=0.0, le=1.0, description="Drop entity links below this.")
    cooccurrence_min: int = Field(
        0, ge=0, description="Add entity-entity edges for pairs co-mentioned in at least N news (0: off)."
    )
    encoder: Annotated[Literal["sage", "gat"], GNN] = Field(
        "sage", description="GraphSAGE (mean) or GAT (multi-head)."
    )
    layers: Annotated[int, GNN] = Field(
        2,
        ge=1,
        le=4,
        description="Message-passing layers: 1 reaches a news item's entities, 2 also their co-occurring "
        "entities (with cooccurrence_min), 3 the entities of news that share one.",
    )
    hidden: Annotated[int, GNN] = Field(
        128, ge=8, description="Hidden size of the GNN (its output is projected to the model's dim)."
    )
    heads: Annotated[int, GNN] = Field(
        4, ge=1, description="Attention heads (GAT); hidden must be divisible by it."
    )
    dropout: Annotated[float, GNN] = Field(0.1, ge=0.0, lt=1.0, description="Dropout between GNN layers.")
    residual: Annotated[bool, GNN] = Field(True, description="Residual connections between layers.")
    mode: Annotated[Literal["auto", "full", "sampled"], GNN] = Field(
        "auto", description="Full-graph message passing, neighbour sampling, or by size (auto)."
    )
    # 50k: on a CPU a full-graph pass at MIND-small scale (~81k nodes) costs 0.65 s per training
    # step against 0.13 s sampled (benchmarks/bench_graph.py), with the same validation AUC on the
    # built-in data; small graphs stay exact.
    full_graph_max_nodes: Annotated[int, Flag("graph", name="--full-graph-max-nodes")] = Field(
        50_000,
        ge=1,
        description="In auto mode, graphs with more nodes (news + entities) than this are sampled.",
    )
    num_neighbors: Annotated[list[int], GNN] = Field(
        [15, 10],
        min_length=1,
        description="Edges drawn per node and edge type at each hop in sampled mode (-1: all); "
        "the last value repeats for extra layers.",
    )
    inference_batch: Annotated[int, GNN] = Field(
        4096, ge=1, description="News nodes per sampled chunk when encoding every news (sampled mode)."
    )


class TrainSettings(StageSettings):
    """The recommender and its training loop (`newsrec train`)."""

    section: ClassVar[str] = "train"

    # model: news encoder
    use_id: Annotated[bool, MODEL] = Field(
        True,
        description="Learnable news-ID embedding over training news; fresh news share an 'unseen' vector.",
    )
    use_text: Annotated[bool, MODEL] = Field(
        True, description="Frozen text vector from the store, projected."
    )
    use_graph: Annotated[bool, MODEL] = Field(
        True, description="GNN vector of the news node (only when --graph is given)."
    )
    use_category: Annotated[bool, MODEL] = Field(True, description="Category and subcategory embeddings.")
    use_popularity: Annotated[bool, POPULARITY] = Field(
        False,
        description="Popularity term in the score: each news' time-decayed clicks, impressions, CTR and "
        "age from the impressions strictly before the candidate's time (a learned weight says how much).",
    )
    popularity_head: Annotated[Literal["ctr", "gate"], POPULARITY] = Field(
        # ctr chose better than gate on mind_recon_dev's Nov 12 (replay AUC 0.654 vs 0.631, seed 0).
        "ctr",
        description="ctr: one learned weight on the smoothed CTR's logit; gate: an MLP over all "
        "popularity features, weighted by a gate on the user's history length.",
    )
    popularity_half_life: Annotated[float, POPULARITY] = Field(
        6.0, gt=0, description="Hours after which a click or impression counts half (popularity decay)."
    )
    popularity_prior: Annotated[float, POPULARITY] = Field(
        20.0,
        ge=0,
        description="Pseudo-impressions at the stream's CTR that smooth each news' CTR (popularity).",
    )
    valid_protocol: Annotated[Literal["offline", "replay"], POPULARITY] = Field(
        "offline",
        description="How the epoch-choosing split reads popularity: frozen at the end of training "
        "(offline), or in time order with every earlier impression's clicks (replay). Choose the "
        "protocol you will report.",
    )
    fusion: Annotated[Literal["concat", "attention", "gate"], MODEL] = Field(
        "attention",
        description="How modalities combine: MLP over the concatenation, a learned query, or gates.",
    )
    text_projection: Annotated[Literal["linear", "mlp"], MODEL] = Field(
        "linear",
        # linear beat the MLP on real MIND impressions (AUC 0.689 vs 0.671, 3 seeds) and tied on synthetic.
        description="Projection of the frozen text vectors: Linear+LayerNorm, or a two-layer MLP.",
    )
    dim: Annotated[int, MODEL] = Field(
        128,
        ge=8,
        # 256 scored the same on synthetic data (AUC within 0.001) at half the speed on CPU.
        description="Size of news and user vectors.",
    )
    id_dropout: Annotated[float, MODEL] = Field(
        0.5,
        ge=0.0,
        le=1.0,
        # High on purpose: most test news are fresh, so the model must rank well without their IDs.
        description="Share of training news per batch whose ID is replaced by the unseen vector.",
    )
    missing: Annotated[Literal["error", "learned"], MODEL] = Field(
        "error", description="News without a text vector: an error, or a learned vector plus mask (reported)."
    )
    # model: user encoder and score
    text_dropout: Annotated[float, MODEL] = Field(
        0.2, ge=0.0, lt=1.0, description="Dropout on the frozen text vector before its projection."
    )
    content_prior: Annotated[bool, MODEL] = Field(
        True,
        description="Add w x cosine(candidate text, mean of clicked text) to the score: training starts "
        "at the content baseline and learns on top (needs text).",
    )
    prior_weight: Annotated[float, MODEL] = Field(
        5.0, gt=0.0, lt=30.0, description="Initial weight w of the content prior (learned; at most 30)."
    )
    prior_adapter: Annotated[bool, MODEL] = Field(
        False, description="Learn a weight per text feature inside the content prior (starts at 1)."
    )
    finetune_text: Annotated[int, MODEL] = Field(
        0,
        ge=0,
        description="Fine-tune the last K transformer layers of the local text model end to end "
        "(0: the store's frozen vectors). Needs a local-model store; slow without a GPU.",
    )
    finetune_lr: Annotated[float, MODEL] = Field(
        2e-5, gt=0, description="Peak learning rate of the fine-tuned text layers (--finetune-text)."
    )
    user_encoder: Annotated[Literal["nrms", "candidate"], MODEL] = Field(
        "nrms",
        description="NRMS (self-attention + pooling) or candidate-aware (the candidate attends over the clicks).",
    )
    heads: Annotated[int, MODEL] = Field(
        8, ge=1, description="Self-attention heads of the user encoder (dim must divide by it)."
    )
    history: Annotated[int, MODEL] = Field(
        50, ge=1, description="Most recent clicks kept per user (NRMS uses 50)."
    )
    use_user_id: Annotated[bool, MODEL] = Field(
        False, description="User-ID embedding over training users (off: most users are new)."
    )
    scoring: Annotated[Literal["dot", "cosine"], MODEL] = Field(
        "dot", description="Score head: scaled dot product or cosine, times a learned temperature."
    )
    score_scale: Annotated[float | None, MODEL] = Field(
        None,
        gt=0,
        lt=30,
        description="Initial scale of the learned score (default: 2 for dot, 3 for cosine; learned after).",
    )
    dropout: Annotated[float, MODEL] = Field(
        0.2, ge=0.0, lt=1.0, description="Dropout in the encoders (NRMS: 0.2)."
    )
    # loss
    loss: Annotated[Literal["listwise", "pointwise", "focal", "infonce"], LOSS] = Field(
        # infonce beat listwise on real MIND days held out from selection (mind_recon_dev, two
        # splits by day, 2 seeds each): mean AUC 0.645 vs 0.640, nDCG@10 0.398 vs 0.393.
        "infonce",
        description="Loss on logits: softmax over 1 click + K non-clicks, BCE, focal BCE, or InfoNCE "
        "(the click against its impression's negatives and every other candidate of the batch).",
    )
    temperature: Annotated[float, LOSS] = Field(
        1.0, gt=0.0, description="InfoNCE: logits are divided by this."
    )
    hard_negatives: Annotated[int, LOSS] = Field(
        0,
        ge=0,
        description="Of the K negatives, this many are the unclicked news of the impression that the "
        "current model ranks highest (the rest are drawn at random).",
    )
    aux_category: Annotated[float, LOSS] = Field(
        0.0,
        ge=0.0,
        description="Weight of an auxiliary loss: predict the clicked news' category from the user (0: off).",
    )
    negatives: Annotated[int, LOSS] = Field(
        4, ge=1, description="Unclicked news of the same impression per click (MIND standard: 4)."
    )
    history_positives: Annotated[float, LOSS] = Field(
        0.0,
        ge=0.0,
        description="History clicks trained on as extra positives, per click of the training impressions "
        "(0: off): each with the user's other history clicks as context and news of other histories "
        "as negatives.",
    )
    history_negatives: Annotated[Literal["category", "random"], LOSS] = Field(
        "category",
        description="Negatives of a history positive: history news of its category, or of any.",
    )
    pos_weight: Annotated[float | None, LOSS] = Field(
        None, gt=0, description="Weight of clicks in the pointwise loss."
    )
    gamma: Annotated[float, LOSS] = Field(2.0, ge=0.0, description="Focusing parameter of the focal loss.")
    # optimisation
    epochs: Annotated[int, SCHEDULE] = Field(
        5,
        ge=1,
        # validation AUC still rose up to epoch 4-6 on real and synthetic data; early stopping guards the rest.
        description="Passes over the training clicks (early stopping may end sooner).",
    )
    max_steps: Annotated[int | None, SCHEDULE] = Field(
        None, ge=1, description="Stop after this many steps (also the schedule's length)."
    )
    time_budget: Annotated[float | None, SCHEDULE] = Field(
        None, gt=0, description="Stop after this many seconds, validate and save (resumable)."
    )
    checkpoint_every: Annotated[int | None, SCHEDULE] = Field(
        None,
        ge=1,
        description="Also write last.pt every this many steps inside an epoch, so a killed run "
        "(kill -9, a lost node) resumes from there instead of the epoch's start.",
    )
    batch_size: Annotated[int, SCHEDULE] = Field(64, ge=1, description="Clicks per step.")
    lr: Annotated[float, SCHEDULE] = Field(1e-3, gt=0, description="Peak AdamW learning rate.")
    weight_decay: Annotated[float, SCHEDULE] = Field(
        0.01, ge=0, description="AdamW weight decay (not on embeddings, norms, biases)."
    )
    warmup: Annotated[float, SCHEDULE] = Field(
        0.05, ge=0, lt=1, description="Share of the steps with a linear warm-up."
    )
    schedule: Annotated[Literal["cosine", "plateau", "constant"], SCHEDULE] = Field(
        "cosine",
        description="After warm-up: cosine decay to 10%, halve on a validation plateau, or constant.",
    )
    clip: Annotated[float, SCHEDULE] = Field(1.0, gt=0, description="Gradient norm clipping.")
    patience: Annotated[int, SCHEDULE] = Field(
        2, ge=1, description="Epochs without a better valid AUC before stopping."
    )
    min_delta: Annotated[float, SCHEDULE] = Field(
        1e-4, ge=0.0, description="A validation AUC must rise by more than this to count as better."
    )
    # tune turns it off: a study's trial is worth what its training made, never the untrained prior.
    choose_untrained: Annotated[bool, SCHEDULE] = Field(
        True,
        description="Epoch 0 (the untrained model: the content prior alone) may be chosen as model.pt "
        "when no trained epoch beats it on the selection split; off: the best trained epoch is chosen.",
    )
    valid_impressions: Annotated[int | None, SCHEDULE] = Field(
        None, ge=1, description="Validate on a fixed random sample of this many impressions (default: all)."
    )
    seed: Annotated[Seed, RUN] = Field(
        42,
        description="Same seed, machine and threads: bit-identical numbers (another thread count: last digits vary).",
    )
    # hardware
    device: Annotated[str, RUN] = Field(
        "auto", description="auto (CUDA when present), cpu, cuda, cuda:1, ..."
    )
    bf16: Annotated[bool, RUN] = Field(True, description="bfloat16 autocast on CUDA (never on CPU).")
    workers: Annotated[int, RUN] = Field(
        0, ge=0, description="DataLoader worker processes building batches (0: in the main one)."
    )
    threads: Annotated[int | None, RUN] = Field(
        None, ge=1, description="CPU threads of torch (default: torch's choice)."
    )
    eval_batch_size: Annotated[int, RUN] = Field(
        1024, ge=1, description="Impressions per batch when validating."
    )


class FilterSettings(StageSettings):
    """Subsets of a dataset (`newsrec filter`)."""

    section: ClassVar[str] = "filter"

    require_on: Literal["candidates", "history", "both"] = Field(
        "both", description="Where --require-embeddings applies."
    )
    # The history is context, not what is ranked: losing a few of its news costs little, losing
    # the impression costs a training example. Candidates are never dropped one by one.
    history_missing: Literal["drop-ids", "drop-impression"] = Field(
        "drop-ids",
        description="History news without a vector: remove those IDs from the history (drop-ids) "
        "or drop the impression (drop-impression).",
    )
    min_history: int = Field(
        0, ge=0, description="Keep impressions whose history has at least N clicks (after drop-ids)."
    )
    users_sample: int | None = Field(None, ge=1, description="Keep the impressions of N random users.")
    seed: Seed = Field(42, description="Seed of --users-sample.")


class EvaluateSettings(StageSettings):
    """Metrics and prediction files (`newsrec evaluate`)."""

    section: ClassVar[str] = "evaluate"

    metrics: str = Field(
        "auc,mrr,ndcg,beyond",
        description="Comma-separated: auc, mrr, ndcg (= ndcg@5,ndcg@10), ndcg@K, hit@K, logloss, ece; "
        "beyond accuracy: ild, categories, calibration, novelty, popularity, coverage, gini (each @5,@10, "
        "or KIND@K); beyond = all of them that the inputs allow.",
    )
    rerank: str = Field(
        "none",
        description="Re-rank each impression's top 10 (the largest k of --metrics) before scoring: "
        "mmr:λ (diversity, text vectors), calibration:λ (history's categories) or none; λ in [0, 1].",
    )
    retrieve: bool = Field(
        False,
        description="Retrieve each impression's top 10 from every news the reported split showed up to "
        "its time (its history excluded), as serve does, instead of ranking its candidates.",
    )
    split: Literal["auto", "valid", "test"] = Field(
        "auto",
        description="auto: the split the run's protocol reports (valid/ when train/'s last day chose "
        "the epoch, test/ when valid/ chose); valid: the valid/ folder, else the split that chose; "
        "test: test/.",
    )
    baselines: bool = Field(False, description="Add random, popularity and content rows to the table.")
    protocol: Literal["offline", "replay"] = Field(
        "offline",
        description="offline: popularity frozen at the end of the training period; replay: the split in "
        "time order, each impression scored with the clicks of every earlier one, its own added after.",
    )
    by: Literal["none", "category", "history-length"] = Field(
        "none", description="Also break the metrics down by candidate category or history length."
    )
    write_predictions: bool = Field(
        False, description="Write prediction.txt and prediction.zip (MIND leaderboard format)."
    )
    seed: Seed = Field(0, description="Seed of the random baseline and of popularity's tie-break.")
    batch_size: int = Field(512, ge=1, description="Impressions per inference batch.")
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda, ...")


class DiagnoseSettings(StageSettings):
    """Checks of data and models (`newsrec diagnose`)."""

    section: ClassVar[str] = "diagnose"

    sample: int = Field(512, ge=1, description="Impressions sampled for the model checks (stable shares).")
    steps: int = Field(5, ge=1, description="Training steps watched by the gradient check.")
    seed: Seed = Field(0, description="Seed of the sample.")
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda, ... for the model checks.")
    scale: float | None = Field(
        None,
        gt=0,
        lt=30,
        # The score head's scale (bounded below 30) has no train setting yet; this sets it on a fresh model (--init) to
        # test a temperature before training, e.g. 10 with scoring = "dot" reproduces saturation.
        description="With --init: the score head's initial scale (logit = scale x similarity, an inverse "
        "temperature) instead of the model's default.",
    )
    normalize: bool | None = Field(
        None,
        # No train setting turns the cosine head's normalisation off; this simulates a model that
        # forgot it, the configuration of the original failure (with scale = 10).
        description='With --init and train.scoring = "cosine": false drops the L2 normalisation '
        "(logit = scale x u.n) to check what un-normalised vectors do.",
    )


STAGES: tuple[type[StageSettings], ...] = (
    DataSettings,
    SynthSettings,
    EmbedSettings,
    GraphSettings,
    TrainSettings,
    FilterSettings,
    EvaluateSettings,
    DiagnoseSettings,
)

S = TypeVar("S", bound=StageSettings)


@dataclass
class Resolved(Generic[S]):
    """A validated stage model and, per field, where its value came from."""

    settings: S
    sources: dict[str, str]


def read_config_file(path: Path | None) -> dict[str, Any]:
    """Parse a TOML settings file into {section: {field: value}}; unknown sections are errors."""
    if path is None:
        return {}
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SettingsError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}") from None
    known = {stage.section for stage in STAGES}
    for key, value in data.items():
        if key not in known:
            raise SettingsError(f"{path}: unknown section [{key}]; allowed: {', '.join(sorted(known))}")
        if not isinstance(value, dict):
            raise SettingsError(f"{path}: [{key}] must be a table")
    return data


def _env_values(model: type[StageSettings], env: Mapping[str, str]) -> dict[str, Any]:
    prefix = f"{ENV_PREFIX}{model.section.upper()}_"
    values: dict[str, Any] = {}
    for name in model.model_fields:
        raw = env.get(prefix + name.upper())
        if raw is None:
            continue
        # Lists and nulls arrive as JSON; everything else as the string pydantic coerces.
        if raw.startswith("[") or raw == "null":
            try:
                values[name] = json.loads(raw)
                continue
            except json.JSONDecodeError:
                pass
        values[name] = raw
    return values


def _format_error(model: type[StageSettings], exc: ValidationError, sources: dict[str, str]) -> str:
    messages = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "?"
        top = str(err["loc"][0]) if err["loc"] else ""
        origin = sources.get(top, "default")
        value = err.get("input")
        if err["type"] == "extra_forbidden":
            allowed = ", ".join(model.model_fields)
            messages.append(f"{model.section}.{field}: unknown setting (from {origin}); allowed: {allowed}")
            continue
        messages.append(f"{model.section}.{field} = {value!r} (from {origin}): {err['msg']}")
    return "; ".join(messages)


def resolve(
    model: type[S],
    *,
    config: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    file_data: dict[str, Any] | None = None,
) -> Resolved[S]:
    """Merge defaults < TOML file < environment < flags for one stage and validate once.

    `overrides` holds the command-line flags; a value of None means "not given".
    """
    env = os.environ if env is None else env
    data = file_data if file_data is not None else read_config_file(config)
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {name: "default" for name in model.model_fields}
    for name, value in data.get(model.section, {}).items():
        merged[name] = value
        sources[name] = f"file {config}" if config else "file"
    for name, value in _env_values(model, env).items():
        merged[name] = value
        sources[name] = f"env {ENV_PREFIX}{model.section.upper()}_{name.upper()}"
    for name, value in (overrides or {}).items():
        if value is not None:
            merged[name] = value
            sources[name] = "flag"
    try:
        settings = model(**merged)
    except ValidationError as exc:
        raise SettingsError(_format_error(model, exc, sources)) from None
    return Resolved(settings=settings, sources=sources)


def example_toml() -> str:
    """A commented TOML file with every stage, every field at its default (for `config init`)."""
    lines = [
        "# newsrec settings. Precedence: defaults < this file < NEWSREC_<STAGE>_<FIELD> < flags.",
        "# Uncomment and edit what you want to change.",
        "",
    ]
    for stage in STAGES:
        doc = (stage.__doc__ or "").strip().splitlines()[0]
        lines.append(f"# {doc}")
        lines.append(f"[{stage.section}]")
        defaults = stage()
        for name, info in stage.model_fields.items():
            if info.description:
                lines.extend(f"# {part.strip()}" for part in info.description.splitlines())
            value = getattr(defaults, name)
            if value is None:
                # unset by default: an example value, so that the line is valid TOML when uncommented
                lines.append(f"# {name} = {toml_value(_example(name, info))}  # example; unset by default")
            else:
                lines.append(f"# {name} = {toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


EXAMPLES: dict[str, Any] = {"model": "all-MiniLM-L6-v2", "base_url": "http://localhost:8000/v1"}


def _example(name: str, info: Any) -> Any:
    """A valid value for a field whose default is None: from EXAMPLES or its type and bounds."""
    if name in EXAMPLES:
        return EXAMPLES[name]
    kinds = [a for a in typing.get_args(info.annotation) if a is not type(None)] or [info.annotation]
    kind = kinds[0]
    low = next(
        (
            getattr(m, attr)
            for m in info.metadata
            for attr in ("ge", "gt")
            if getattr(m, attr, None) is not None
        ),
        None,
    )
    if kind is bool:
        return False
    if kind is int:
        return max(
            1, int(low or 0) + (1 if any(getattr(m, "gt", None) is not None for m in info.metadata) else 0)
        )
    if kind is float:
        return float(max(1.0, (low or 0) * 2))
    if typing.get_origin(kind) is typing.Literal:
        return typing.get_args(kind)[0]
    return ""


def toml_value(value: Any) -> str:
    """A value as TOML spells it (tomli-w), on one line: the commented example of `config init`
    keeps one setting a line (tomli-w writes an array over several)."""
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return tomli_w.dumps({"v": value}).removeprefix("v = ").rstrip("\n")
