"""`newsrec train`: parse flags into settings, run the training loop, render progress and tables."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress, TaskID
from rich.table import Table

from newsrec_cli.commands.common import (
    ConfigOption,
    JsonOption,
    console,
    err_console,
    handle_errors,
    print_json,
    progress,
    settings_from,
)
from newsrec_cli.settings import DataSettings, GraphSettings, TrainSettings

METRICS = ("auc", "mrr", "ndcg@5", "ndcg@10")


def _opt(help: str, *names: str) -> Any:
    return typer.Option(*names, help=help, show_default=False)


@handle_errors
def train_command(
    data: Annotated[
        Path | None,
        typer.Argument(
            help="MIND folder, or a parent of train/ valid/ (optional with --resume).", exists=True
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory to write (or to resume).")] = ...,  # type: ignore[assignment]
    embeddings: Annotated[
        Path | None,
        typer.Option("--embeddings", "-e", help="Text vector store (newsrec embed).", exists=True),
    ] = None,
    graph: Annotated[
        Path | None, typer.Option("--graph", help="News-entity graph (newsrec build-graph).", exists=True)
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out from its last.pt.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Delete the run files in --out and start over.")
    ] = False,
    # model
    use_id: Annotated[
        bool | None, _opt("News-ID embedding (fresh news: unseen vector).", "--use-id/--no-use-id")
    ] = None,
    use_text: Annotated[
        bool | None, _opt("Text vectors from --embeddings.", "--use-text/--no-use-text")
    ] = None,
    use_graph: Annotated[bool | None, _opt("GNN vectors from --graph.", "--use-graph/--no-use-graph")] = None,
    use_category: Annotated[
        bool | None, _opt("Category and subcategory embeddings.", "--use-category/--no-use-category")
    ] = None,
    use_popularity: Annotated[
        bool | None,
        _opt(
            "Popularity term: decayed clicks of each news before the impression's time.",
            "--use-popularity/--no-use-popularity",
        ),
    ] = None,
    popularity_head: Annotated[str | None, _opt("ctr (default) or gate.", "--popularity-head")] = None,
    popularity_half_life: Annotated[
        float | None, _opt("Hours after which a click counts half (default 6).", "--popularity-half-life")
    ] = None,
    valid_protocol: Annotated[
        str | None,
        _opt("Popularity on the epoch-choosing split: offline (default) or replay.", "--valid-protocol"),
    ] = None,
    fusion: Annotated[str | None, _opt("concat, attention (default) or gate.", "--fusion")] = None,
    text_projection: Annotated[str | None, _opt("linear (default) or mlp.", "--text-projection")] = None,
    dim: Annotated[int | None, _opt("Size of news and user vectors.", "--dim")] = None,
    heads: Annotated[int | None, _opt("User self-attention heads.", "--heads")] = None,
    history: Annotated[int | None, _opt("Most recent clicks kept per user.", "--history")] = None,
    use_user_id: Annotated[bool | None, _opt("User-ID embedding.", "--use-user-id/--no-use-user-id")] = None,
    scoring: Annotated[str | None, _opt("dot (default) or cosine.", "--scoring")] = None,
    dropout: Annotated[float | None, _opt("Dropout in the encoders.", "--dropout")] = None,
    id_dropout: Annotated[
        float | None, _opt("Share of news IDs replaced by the unseen vector.", "--id-dropout")
    ] = None,
    missing: Annotated[str | None, _opt("News without a text vector: error or learned.", "--missing")] = None,
    text_dropout: Annotated[
        float | None, _opt("Dropout on the text vector before its projection.", "--text-dropout")
    ] = None,
    content_prior: Annotated[
        bool | None,
        _opt(
            "Add w x cosine(candidate text, mean clicked text) to the score (default on).",
            "--content-prior/--no-content-prior",
        ),
    ] = None,
    prior_weight: Annotated[
        float | None, _opt("Initial weight of the content prior.", "--prior-weight")
    ] = None,
    user_encoder: Annotated[
        str | None, _opt("nrms (default) or candidate (candidate-aware attention).", "--user-encoder")
    ] = None,
    finetune_text: Annotated[
        int | None,
        _opt(
            "Fine-tune the last K layers of the local text model end to end (0: frozen store vectors; slow without a GPU).",
            "--finetune-text",
        ),
    ] = None,
    finetune_lr: Annotated[
        float | None, _opt("Peak learning rate of the fine-tuned text layers (2e-5).", "--finetune-lr")
    ] = None,
    # loss
    loss: Annotated[str | None, _opt("infonce (default), listwise, pointwise or focal.", "--loss")] = None,
    temperature: Annotated[float | None, _opt("InfoNCE temperature.", "--temperature")] = None,
    hard_negatives: Annotated[
        int | None,
        _opt("Of the K negatives, this many are the ones the model ranks highest.", "--hard-negatives"),
    ] = None,
    aux_category: Annotated[
        float | None,
        _opt("Weight of the auxiliary loss: the clicked news' category from the user.", "--aux-category"),
    ] = None,
    negatives: Annotated[int | None, _opt("Unclicked news per click (K).", "--negatives")] = None,
    history_positives: Annotated[
        float | None,
        _opt(
            "History clicks trained on as extra positives, per impression click (0: off; e.g. 0.5).",
            "--history-positives",
        ),
    ] = None,
    history_negatives: Annotated[
        str | None,
        _opt("Negatives of a history positive: category (default) or random.", "--history-negatives"),
    ] = None,
    pos_weight: Annotated[float | None, _opt("Click weight of the pointwise loss.", "--pos-weight")] = None,
    gamma: Annotated[float | None, _opt("Focal loss gamma.", "--gamma")] = None,
    # optimisation
    epochs: Annotated[int | None, _opt("Passes over the training clicks.", "--epochs")] = None,
    max_steps: Annotated[int | None, _opt("Stop after this many steps.", "--max-steps")] = None,
    time_budget: Annotated[
        float | None, _opt("Stop after this many seconds (resumable).", "--time-budget")
    ] = None,
    checkpoint_every: Annotated[
        int | None,
        _opt(
            "Also write last.pt every this many steps (a killed run resumes from there).",
            "--checkpoint-every",
        ),
    ] = None,
    batch_size: Annotated[int | None, _opt("Clicks per step.", "--batch-size")] = None,
    lr: Annotated[float | None, _opt("Peak learning rate.", "--lr")] = None,
    weight_decay: Annotated[float | None, _opt("AdamW weight decay.", "--weight-decay")] = None,
    warmup: Annotated[float | None, _opt("Share of steps of warm-up.", "--warmup")] = None,
    schedule: Annotated[str | None, _opt("cosine (default), plateau or constant.", "--schedule")] = None,
    clip: Annotated[float | None, _opt("Gradient norm clipping.", "--clip")] = None,
    patience: Annotated[
        int | None, _opt("Epochs without better valid AUC before stopping.", "--patience")
    ] = None,
    min_delta: Annotated[
        float | None, _opt("A valid AUC must rise by more than this to count as better.", "--min-delta")
    ] = None,
    valid_impressions: Annotated[
        int | None, _opt("Validate on a fixed sample of N impressions.", "--valid-impressions")
    ] = None,
    seed: Annotated[
        int | None, _opt("Seed (same seed, machine and --threads: bit-identical numbers).", "--seed")
    ] = None,
    device: Annotated[str | None, _opt("auto, cpu, cuda, cuda:1, ...", "--device")] = None,
    workers: Annotated[int | None, _opt("DataLoader worker processes.", "--workers")] = None,
    threads: Annotated[int | None, _opt("CPU threads of torch.", "--threads")] = None,
    # data and graph
    split: Annotated[str | None, _opt("Validation: auto, time or impression.", "--split")] = None,
    valid_days: Annotated[
        int | None,
        _opt(
            "Choose the epoch on the last N days of train/ (default 1 where train/ chooses).",
            "--valid-days",
        ),
    ] = None,
    select_on: Annotated[
        str | None,
        _opt(
            "auto: choose on a split that is not reported; valid: on valid/ itself (optimistic).",
            "--select-on",
        ),
    ] = None,
    graph_encoder: Annotated[str | None, _opt("GNN of --graph: sage or gat.", "--graph-encoder")] = None,
    nproc: Annotated[
        int | None,
        typer.Option(
            "--nproc",
            min=1,
            show_default=False,
            help="Train with N processes (DistributedDataParallel) started by torch.distributed.run; "
            "the global batch stays --batch-size. Under torchrun, leave it out.",
        ),
    ] = None,
    config: ConfigOption = None,
    json_out: JsonOption = False,
) -> None:
    """Train a news recommender (ID + text + graph + category, NRMS user encoder, content prior) on a MIND dataset.

    Example: newsrec train data/mind --embeddings data/mind/minilm --out runs/nrms

    By default the epoch is chosen on the last day of train/ and valid/, a later day, is reported (with a labelled test/: valid/ chooses, test/ is reported): newsrec evaluate runs/nrms --baselines

    Choose on valid/ and report it too (the figures are then optimistic, and every table says so): newsrec train data/mind -e stores/minilm --select-on valid --out runs/opt

    With a graph and GAT: newsrec train data/mind -e stores/minilm --graph graphs/mind --graph-encoder gat --out runs/gat

    With popularity from the click stream, the epoch chosen by online replay: newsrec train data/mind -e stores/minilm --valid-days 1 --use-popularity --valid-protocol replay --out runs/pop, then newsrec evaluate runs/pop --data data/mind --protocol replay

    Continue an interrupted run: newsrec train --resume --out runs/nrms

    Start over in the same folder: newsrec train data/mind -e stores/minilm --out runs/nrms --overwrite

    Fine-tune the last 2 layers of the local text model (a GPU, or small data): newsrec train data/mind -e stores/minilm-torch --finetune-text 2 --out runs/ft

    Two processes on this machine (DDP): newsrec train data/mind -e stores/minilm --out runs/ddp --nproc 2; on a cluster, per node: torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint HOST:29400 -m newsrec_cli train data/mind -e stores/minilm --out runs/ddp. --resume works with the same or another number of processes.
    """
    settings = settings_from(
        TrainSettings,
        config,
        use_id=use_id,
        use_text=use_text,
        use_graph=use_graph,
        use_category=use_category,
        use_popularity=use_popularity,
        popularity_head=popularity_head,
        popularity_half_life=popularity_half_life,
        valid_protocol=valid_protocol,
        fusion=fusion,
        text_projection=text_projection,
        dim=dim,
        heads=heads,
        history=history,
        use_user_id=use_user_id,
        scoring=scoring,
        dropout=dropout,
        id_dropout=id_dropout,
        missing=missing,
        text_dropout=text_dropout,
        content_prior=content_prior,
        prior_weight=prior_weight,
        user_encoder=user_encoder,
        finetune_text=finetune_text,
        finetune_lr=finetune_lr,
        loss=loss,
        temperature=temperature,
        hard_negatives=hard_negatives,
        aux_category=aux_category,
        negatives=negatives,
        history_positives=history_positives,
        history_negatives=history_negatives,
        pos_weight=pos_weight,
        gamma=gamma,
        epochs=epochs,
        max_steps=max_steps,
        time_budget=time_budget,
        checkpoint_every=checkpoint_every,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        warmup=warmup,
        schedule=schedule,
        clip=clip,
        patience=patience,
        min_delta=min_delta,
        valid_impressions=valid_impressions,
        seed=seed,
        device=device,
        workers=workers,
        threads=threads,
    ).settings
    data_settings = settings_from(
        DataSettings, config, split=split, valid_days=valid_days, select_on=select_on
    ).settings
    graph_settings = settings_from(GraphSettings, config, encoder=graph_encoder).settings
    if data is None and not resume:
        raise typer.BadParameter(
            "give the dataset folder DATA (only --resume can do without it)", param_hint="DATA"
        )
    request = TrainRequest(
        data=data,
        out=out,
        embeddings=embeddings,
        graph=graph,
        resume=resume,
        overwrite=overwrite,
        settings=settings,
        data_settings=data_settings,
        graph_settings=graph_settings,
        json_out=json_out,
    )
    if nproc is not None and nproc > 1:
        from newsrec_cli.train.distributed import launched_world
        from newsrec_cli.train.launch import launch

        if launched_world() is not None:
            raise typer.BadParameter(
                "this process was started by torchrun already: leave --nproc out", param_hint="--nproc"
            )
        launch(nproc, request.to_json(), out=out, threads=settings.threads)
        return
    run_request(request)


@dataclass
class TrainRequest:
    """What `newsrec train` was asked to do, with its settings resolved: what each worker of
    `--nproc` receives (as JSON), so that every rank trains with exactly these values."""

    data: Path | None
    out: Path
    embeddings: Path | None
    graph: Path | None
    resume: bool
    overwrite: bool
    settings: TrainSettings
    data_settings: DataSettings
    graph_settings: GraphSettings
    json_out: bool

    def to_json(self) -> dict[str, Any]:
        paths = {k: None if v is None else str(Path(v).resolve()) for k, v in self._paths().items()}
        return {
            **paths,
            "resume": self.resume,
            "overwrite": self.overwrite,
            # Only what was given (flag, file, environment): on --resume the rest comes from the run.
            "settings": self.settings.model_dump(mode="json", exclude_unset=True),
            "data_settings": self.data_settings.model_dump(mode="json", exclude_unset=True),
            "graph_settings": self.graph_settings.model_dump(mode="json", exclude_unset=True),
            "json_out": self.json_out,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> TrainRequest:
        def path(key: str) -> Path | None:
            return None if raw[key] is None else Path(raw[key])

        return cls(
            data=path("data"),
            out=Path(raw["out"]),
            embeddings=path("embeddings"),
            graph=path("graph"),
            resume=bool(raw["resume"]),
            overwrite=bool(raw["overwrite"]),
            settings=TrainSettings.model_validate(raw["settings"]),
            data_settings=DataSettings.model_validate(raw["data_settings"]),
            graph_settings=GraphSettings.model_validate(raw["graph_settings"]),
            json_out=bool(raw["json_out"]),
        )

    def _paths(self) -> dict[str, Path | None]:
        return {"data": self.data, "out": self.out, "embeddings": self.embeddings, "graph": self.graph}


def run_request(request: TrainRequest) -> None:
    """Train as asked, in this process (or as one rank under torchrun: rank 0 alone renders)."""
    from newsrec_cli.train.distributed import launched_world
    from newsrec_cli.train.loop import train

    launched = launched_world()
    main = launched is None or launched[0] == 0
    view = _Progress(quiet=request.json_out or not main)
    try:
        result = train(
            request.data,
            request.out,
            store=request.embeddings,
            graph=request.graph,
            settings=request.settings,
            data_settings=request.data_settings,
            graph_settings=request.graph_settings,
            resume=request.resume,
            overwrite=request.overwrite,
            callbacks=view,
        )
    finally:
        view.close()
    if not main:
        return
    if request.json_out:
        print_json(result.to_dict())
        return
    _render(result)


class _Progress:
    """The engine's callbacks as a rich progress bar (stderr) and one line per epoch."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar: Progress | None = None
        self.task: TaskID | None = None
        self.batch = 1
        self.clicks = 0

    def on_start(self, info: Any) -> None:
        self.clicks = info.clicks
        self.batch = max(1, -(-info.clicks // max(info.steps_per_epoch, 1)))
        if self.quiet:
            return
        resumed = (
            f", resumed at epoch {info.resumed_at[0]} step {info.resumed_at[1]}" if info.resumed_at else ""
        )
        err_console.print(
            f"[bold]train[/] {info.train_impressions:,} impressions ({info.clicks:,} clicks), "
            f"{info.valid_impressions:,} to validate; {info.validation}",
            highlight=False,
        )
        missing = (
            f"; {len(info.missing_text):,} news use the learned missing-text vector"
            if info.missing_text
            else ""
        )
        err_console.print(
            f"model: {' + '.join(info.modalities)}, {info.parameters:,} parameters, "
            f"{info.news_with_id:,} of {info.news:,} news with an ID vector{missing}; device {info.device} "
            f"({info.threads} threads{_processes(info)}, {info.determinism}); "
            f"{info.steps_per_epoch:,} steps per epoch{resumed}",
            highlight=False,
        )
        if info.finetune_text:
            slow = (
                ""
                if info.device.startswith("cuda")
                else "; [yellow]on CPU this is slow[/]: each step runs those layers forward and backward over "
                f"up to {info.step_tokens:,} tokens (the texts of its batch's news), about 3x the cost of "
                "embedding them; use a GPU, or small data"
            )
            err_console.print(
                f"text: fine-tuning the last {info.finetune_text} layers of the local model on the texts of "
                f"{info.cached_news:,} news ({info.cached_tokens:,} tokens){slow}",
                highlight=False,
            )
        if info.unverified_texts:
            err_console.print(
                f"[yellow]note:[/] {info.unverified_texts:,} text vectors could not be checked against "
                "the news texts: the store has no fingerprints (made before newsrec recorded them, or "
                "imported); a new `newsrec embed` store has them",
                highlight=False,
            )

    def on_epoch_start(self, epoch: int, steps: int, done: int) -> None:
        if self.quiet:
            return
        self.close()
        self.bar = progress(unit="samples", transient=True, extra="loss {task.fields[loss]}")
        self.bar.start()
        self.task = self.bar.add_task(
            f"epoch {epoch}", total=self.clicks, completed=min(done * self.batch, self.clicks), loss="…"
        )

    def on_step(self, done: int, loss: float, samples_per_s: float) -> bool:
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, completed=min(done * self.batch, self.clicks), loss=f"{loss:.4f}")
        return False

    def on_validate(self, epoch: int, impressions: int) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, description=f"epoch {epoch}: validating {impressions:,} impressions")

    def on_epoch_end(self, record: Any) -> None:
        self.close()
        if self.quiet:
            return
        m = record.metrics
        tag = " [green]best[/]" if record.best else ""
        part = f" (partial: {record.steps:,} steps)" if record.partial else ""
        if record.epoch == 0:
            part = " (untrained: the content prior)"
        err_console.print(
            f"epoch {record.epoch}{part}: loss {_fmt(record.train_loss)}, AUC {_fmt(m.get('auc'))}, "
            f"MRR {_fmt(m.get('mrr'))}, nDCG@10 {_fmt(m.get('ndcg@10'))}, {record.seconds:.0f} s, "
            f"{record.samples_per_s:,.0f} samples/s{tag}",
            highlight=False,
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def _processes(info: Any) -> str:
    processes = getattr(info, "processes", 1)
    return f" per process, {processes} processes" if processes > 1 else ""


def _fmt(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.4f}"


STOPS = {
    "epochs": "all epochs done",
    "early_stopping": "early stopping (no better validation AUC)",
    "max_steps": "--max-steps reached",
    "time_budget": "--time-budget reached (continue with --resume)",
    "already_finished": "this run had already finished; nothing to do",
}


def _render(result: Any) -> None:
    table = Table(title=f"newsrec train: {result.run_dir} (metrics on validation)", title_justify="left")
    table.add_column("epoch", justify="right")
    table.add_column("train loss", justify="right")
    for name in METRICS:
        table.add_column(
            name.upper() if name in ("auc", "mrr") else name.replace("ndcg", "nDCG"), justify="right"
        )
    table.add_column("seconds", justify="right")
    table.add_column("samples/s", justify="right")
    for record in result.history:
        label = f"{record.epoch}" + ("*" if record.partial else "")
        style = "bold green" if record.best and record.epoch == result.best_epoch else None
        table.add_row(
            label,
            _fmt(record.train_loss),
            *(_fmt(record.metrics.get(m)) for m in METRICS),
            f"{record.seconds:.1f}",
            f"{record.samples_per_s:,.0f}",
            style=style,
        )
    console.print(table)
    if any(r.partial for r in result.history):
        console.print("* part of an epoch, validated when training stopped", style="dim")
    best = result.best_metrics
    if result.best_epoch is None:
        console.print(
            f"no full epoch yet: {result.run_dir / 'model.pt'} holds the partial one until the first full "
            f"epoch replaces it; stopped: {STOPS.get(result.stopped, result.stopped)}; {result.seconds:.0f} s",
            highlight=False,
        )
        console.print(f"{result.info.validation}", style="dim", highlight=False)
        return
    console.print(
        f"best epoch: {result.best_epoch} (valid AUC {_fmt(best.get('auc'))}, nDCG@10 {_fmt(best.get('ndcg@10'))}) "
        f"saved as {result.run_dir / 'model.pt'}; stopped: {STOPS.get(result.stopped, result.stopped)}; "
        f"{result.seconds:.0f} s",
        highlight=False,
    )
    console.print(f"{result.info.validation}", style="dim", highlight=False)
