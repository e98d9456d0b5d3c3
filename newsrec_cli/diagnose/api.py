"""One plain function per `newsrec diagnose` subcommand, for the command layer, tests and notebooks.

Each returns a `Report` (and the PNG files it wrote when asked for plots); none prints.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from newsrec_cli.diagnose.cosine import diagnose_cosine, similarities
from newsrec_cli.diagnose.data import DataInputs, diagnose_data
from newsrec_cli.diagnose.gradients import (
    candidate_attention,
    chance_loss,
    diagnose_gradients,
    train_steps,
)
from newsrec_cli.diagnose.plots import cosine_plots, logit_plots, require_matplotlib
from newsrec_cli.diagnose.report import Report
from newsrec_cli.diagnose.saturation import diagnose_saturation
from newsrec_cli.diagnose.subject import Subject
from newsrec_cli.diagnose.vectors import open_store
from newsrec_cli.errors import InputError
from newsrec_cli.graph import load_graph
from newsrec_cli.mind import find_splits, load_dataset, read_vec


def check_data(
    data: Path, *, store: Path | None = None, graph: Path | None = None, missing_allowed: bool = False
) -> Report:
    """Read a dataset leniently (bad lines are counted, not fatal) and run every data check."""
    folders = find_splits(data)
    with_behaviors = any((f / "behaviors.tsv").exists() for f in folders.values())
    dataset = load_dataset(data, on_bad_lines="skip", bad_entities="collect", behaviors=with_behaviors)
    opened = open_store(store) if store is not None else None
    if opened is not None and opened.meta.get("kind", "news") != "news":
        raise InputError(f"this store holds {opened.meta.get('kind')} vectors, not news vectors", path=store)
    news_graph = None
    if graph is not None:
        news_graph = load_graph(graph)
    entity_vectors = {}
    for file in dataset.vec_files:
        entity_vectors[f"{file.parent.name}/{file.name}"] = read_vec(file)
    report = diagnose_data(
        DataInputs(
            dataset,
            store=opened,
            graph=news_graph,
            entity_vectors=entity_vectors,
            missing_allowed=missing_allowed,
        )
    )
    if not with_behaviors:
        report.notes.append("no behaviors.tsv: only the news checks ran")
    return report


def _origin(report: Report, subject: Subject) -> None:
    report.notes.insert(0, f"{subject.origin}, {len(subject.valid)} sampled validation impressions")


def check_saturation(subject: Subject, plot_dir: Path | None = None) -> tuple[Report, list[Path]]:
    """Logits of the model on the validation sample: range, sigmoid and softmax saturation."""
    if plot_dir is not None:
        require_matplotlib()
    out = subject.valid_outputs()
    report = diagnose_saturation(out, subject.scoring)
    _origin(report, subject)
    plots = logit_plots(out.logits, out.labels, plot_dir) if plot_dir is not None else []
    return report, plots


def check_cosine(subject: Subject, plot_dir: Path | None = None) -> tuple[Report, list[Path]]:
    """Norms and cosines of the model's user and news vectors, and a table over temperatures."""
    if plot_dir is not None:
        require_matplotlib()
    out = subject.valid_outputs()
    report = diagnose_cosine(out, subject.scoring)
    _origin(report, subject)
    plots: list[Path] = []
    if plot_dir is not None:
        norms = {
            "users": np.linalg.norm(out.users, axis=1),
            "candidate news": np.linalg.norm(out.news, axis=1),
        }
        sims = similarities(out)
        plots = cosine_plots({"cosine": sims["cosine"], "dot": sims["raw_dot"]}, out.labels, norms, plot_dir)
    return report, plots


def check_gradients(subject: Subject, steps: int, seed: int) -> Report:
    """Gradient norms per module and fusion weights over `steps` training steps (the model is changed)."""
    norms, losses, weights = train_steps(
        subject.model,
        subject.settings,
        subject.train,
        steps=steps,
        seed=seed,
        user_rows=subject.train_user_rows,
    )
    report = diagnose_gradients(norms, losses, weights, chance=chance_loss(subject.settings))
    attention = candidate_attention(
        subject.model, subject.settings, subject.train, seed=seed, user_rows=subject.train_user_rows
    )
    if attention is not None:
        report.tables.append(attention[0])
        report.checks.append(attention[1])
    s = subject.settings
    report.notes.insert(
        0,
        f"{subject.origin}: {steps} steps of {s.batch_size} clicks x (1 + {s.negatives}) "
        f"candidates, loss {s.loss}, AdamW lr {s.lr:g} (no warm-up), on "
        f"{len(subject.train)} sampled training impressions",
    )
    return report
