"""`newsrec export`: a trained run as ONNX graphs, a news-vector table by ID and a manifest.

Layout of an export folder (see "Serving" in the README):

    news_encoder.onnx    per-news inputs (ID row, category, subcategory, text vector, graph
                         vector) -> (N, D)
    user_encoder.onnx    clicked (B, H, D), mask (B, H), users (B,) -> user state (B, ...)
    scorer.onnx          user state (B, ...), candidates (B, K, D) -> (B, K) logits
    keys.onnx            news vectors (N, D) -> retrieval keys (N, D'): the model's score_keys
    queries.onnx         user state (B, ...) -> retrieval queries (B, D'): its score_queries;
                         the logit of a news is query . key (models without candidate attention)
    popularity_keys.onnx popularity features (N, F) -> (N,): a popularity run's news factor of
                         its term (PopularityHead.news_term)
    popularity_queries.onnx  history lengths (B, 1) -> (B, 1): the user's factor (user_weight);
                         retrieval searches [query, weight] . [key, news factor] (serve/index.py)
    *.int8.onnx          int8 graphs (--quantize int8): the news encoder's matrix products and its
                         embedding tables, the user encoder's matrix products; a graph that int8
                         makes no smaller (the scorer, keys, queries) is served from its fp32 file
    news_vectors/        embedding store (by news ID) of every servable news' model vector
    news_vectors_int8/   the same computed by the int8 news encoder, stored as int8 with a scale
                         per row and part (serve/vector_table.py): 4x smaller
    graph_vectors/       graph runs: the GNN vector of each news on the graph, by news ID
    graph_vectors_int8/  the same as int8 with a scale per row, read by the int8 backend (the
                         only graph table of --quantize int8-only)
    news.tsv             the news' MIND rows (titles, categories, entities) for display
    vocab_*.txt          the run's vocabularies (fresh news map onto them)
    export.json          config hash, shapes, opset, onnxruntime version, checksums, parity

The graphs are traced from wrappers that call only `attach`/`encode_news`, `encode_user_state`,
`score`, `score_keys` and `score_queries`, so a change inside the model needs no change here. Parity is checked on the
validation split before the manifest is written; a failed check leaves no manifest and raises.

A run with the graph modality: the graph is fixed once training is over, so the GNN runs once
here (as evaluate's `graph_cached` does) and its vector for each news becomes a per-news input
(`graph_vector`, `graph_present`) of the news encoder; the news-vector table is computed from it.
A news off the graph (e.g. fresh news ingested while serving) has graph_present False and gets the
model's learned "no graph" vector, as in torch.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from newsrec_cli import __version__, atomic, manifests
from newsrec_cli.digests import file_sha256 as sha256
from newsrec_cli.errors import InputError, NewsrecError, SettingsError
from newsrec_cli.evaluate.metrics import compute_metrics
from newsrec_cli.evaluate.model_scores import run_scores
from newsrec_cli.evaluate.runner import select_split
from newsrec_cli.mind import load_dataset
from newsrec_cli.mind.popularity import FEATURES as POPULARITY_FEATURES
from newsrec_cli.mind.running_counts import RunningCounts
from newsrec_cli.serve.backends import (
    KEYS_INPUTS,
    NEWS_INPUTS,
    POPULARITY_INPUTS,
    POPULARITY_KEYS_INPUTS,
    POPULARITY_QUERIES_INPUTS,
    QUERIES_INPUTS,
    SCORE_INPUTS,
    USER_INPUTS,
    NewsInputs,
    OnnxBackend,
    TorchBackend,
    encode_news_with,
)
from newsrec_cli.serve.popularity import POPULARITY_FILE, frozen_counts
from newsrec_cli.serve.vector_table import Dtype, quantise, read_table, roundtrip, write_table

EXPORT_FORMAT = "newsrec-export"
MANIFEST = "export.json"
EXPORT_VERSION = 2  # 2: keys/queries graphs, int8 tables, per-part graph names in the manifest
GRAPHS = {"news": "news_encoder.onnx", "user": "user_encoder.onnx", "score": "scorer.onnx"}
RETRIEVAL_GRAPHS = {"keys": "keys.onnx", "queries": "queries.onnx"}
POPULARITY_GRAPHS = {
    "popularity_keys": "popularity_keys.onnx",
    "popularity_queries": "popularity_queries.onnx",
}
# int8 pays where there are weights: matrix products and embedding tables. The scorer, keys and
# queries have none (a scale and normalisations), so int8 would only add nodes (measured: the
# int8 scorer was 48% larger than fp32); they are served from their fp32 files.
QUANTISED = ("news", "user")
# none: fp32 graphs and table; int8: both sets (every backend); int8-only: the int8 set alone, the
# smallest folder (--backend int8). The fp32 graphs are made in all three: parity needs them.
QUANTIZE = ("none", "int8", "int8-only")
TABLE = "news_vectors"
TABLE_INT8 = "news_vectors_int8"
GRAPH_TABLE = "graph_vectors"  # the GNN vector of each exported news on the graph (graph runs)
GRAPH_TABLE_INT8 = "graph_vectors_int8"  # the same as int8 with a scale per row (int8 graph sets)
TEXT_TABLE = "text_vectors"  # each exported news' text vector: what MMR and a list's ILD compare
NEWS_TSV = "news.tsv"
VOCABS = ("vocab_news_ids.txt", "vocab_categories.txt", "vocab_subcategories.txt", "vocab_users.txt")
FP32_TOLERANCE = 1e-4  # max |logit difference| of the fp32 graphs against torch
INT8_AUC_TOLERANCE = 0.003  # max |AUC difference| of the int8 graphs against fp32

Say = Callable[[str], None]


class ParityError(NewsrecError):
    """An exported graph does not reproduce the run's scores within the tolerance."""


@dataclass
class ExportReport:
    out: Path
    model_version: str
    news: int
    dim: int
    opset: int
    quantize: str
    parity: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    parity_impressions: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "model_version": self.model_version,
            "news": self.news,
            "dim": self.dim,
            "opset": self.opset,
            "quantize": self.quantize,
            "parity": self.parity,
            "parity_impressions": self.parity_impressions,
            "seconds": round(self.seconds, 2),
        }


def model_version(run_dir: Path) -> str:
    """The run's name and a hash of its weights: a new training gives a new version."""
    return f"{run_dir.resolve().name}-{sha256(run_dir / 'model.pt')[:12]}"


# ----------------------------------------------------------------------------- per-news inputs


def refuse_finetuned(run: Any, what: str) -> None:
    """A --finetune-text run cannot be served: serving embeds fresh news with the store's
    (frozen) model, not the run's fine-tuned layers, so its news vectors would be another model's."""
    if getattr(run, "finetuned", False):
        raise SettingsError(
            f"{what}: this run fine-tuned its text model (--finetune-text {run.settings.finetune_text}); "
            "serving embeds fresh news with the store's frozen model, so it cannot serve this run; "
            "evaluate it with newsrec evaluate, or serve a run trained without --finetune-text",
        )


def run_news_inputs(run: Any) -> tuple[list[str], NewsInputs, np.ndarray]:
    """(news IDs, their encoder inputs, servable mask) for every news the run knows (no padding row).

    A news without a text vector is servable only when the run was trained with --missing learned.
    """
    from newsrec_cli.runs.context import news_features, text_vectors  # torch: ONNX serving imports this file
    from newsrec_cli.runs.files import NEWS_TABLE, load_news_table  # torch: ONNX serving imports this file

    news_vocab, news_table = load_news_table(run.run_dir / NEWS_TABLE)
    text = None
    if run.model.news_encoder.text is not None:
        text, _ = text_vectors(
            run.text_store,
            news_vocab.ids,
            np.zeros(0, np.int64),
            missing="learned",
            expected_dim=run.text_dim,
        )
    features = news_features(news_vocab, news_table, run.vocabs, text=text, graph_index=run.graph_index)
    inputs = inputs_from_features(features, graph_table(run)).rows(slice(1, None))
    servable = np.ones(len(inputs), dtype=bool)
    if inputs.text_present is not None and run.settings.missing != "learned":
        servable = inputs.text_present.copy()
    return news_vocab.ids[1:], inputs, servable


def graph_table(run: Any) -> np.ndarray | None:
    """The GNN vector of every news node, float32 [nodes, D], run once; None without a graph."""
    import torch  # ONNX serving imports this file

    graph = run.model.news_encoder.graph
    if graph is None:
        return None
    graph.eval()
    with torch.no_grad():
        return graph.encoder.all_news().float().cpu().numpy()


def inputs_from_features(features: Any, graph_vectors: np.ndarray | None = None) -> NewsInputs:
    """`graph_vectors` (graph_table) turns the features' graph nodes into per-news graph vectors."""
    graph_vector = graph_present = None
    if graph_vectors is not None:
        if features.graph_node is None:
            raise ValueError("the model has a graph modality but the features have no graph nodes")
        nodes = features.graph_node.numpy()
        graph_present = nodes >= 0
        graph_vector = np.zeros((len(nodes), graph_vectors.shape[1]), np.float32)
        graph_vector[graph_present] = graph_vectors[nodes[graph_present]]
    return NewsInputs(
        id_index=features.id_index.numpy(),
        category=features.category.numpy(),
        subcategory=features.subcategory.numpy(),
        text=None if features.text is None else features.text.numpy(),
        text_present=None if features.text_present is None else features.text_present.numpy(),
        graph_vector=graph_vector,
        graph_present=graph_present,
    )


def dataset_news_inputs(run: Any, dataset: Any, imps: Any) -> NewsInputs:
    """Encoder inputs for a dataset's news vocabulary (what `LoadedRun.attach_dataset` builds)."""
    from newsrec_cli.model.inputs import needed_news  # torch: ONNX serving imports this file
    from newsrec_cli.runs.context import news_features, text_vectors  # torch: ONNX serving imports this file

    text = None
    if run.model.news_encoder.text is not None:
        text, _ = text_vectors(
            run.text_store,
            dataset.news_vocab.ids,
            needed_news(imps),
            missing=run.settings.missing,
            expected_dim=run.text_dim,
        )
    features = news_features(
        dataset.news_vocab, dataset.news, run.vocabs, text=text, graph_index=run.graph_index
    )
    return inputs_from_features(features, graph_table(run))


def backend_scores(
    backend: Any,
    inputs: NewsInputs,
    imps: Any,
    *,
    history: int,
    user_rows: np.ndarray | None,
    table: Callable[[np.ndarray], np.ndarray] | None = None,
    popularity: np.ndarray | None = None,
) -> np.ndarray:
    """Logits aligned with `imps.candidates` through a backend: news once, users once, then scores
    (the same order of work as model/inference.py's score_with_model). `table` maps the news
    vectors to what the served table holds (an int8 table's round trip); `popularity` float32
    [C, F] the features of each candidate slot (a run trained with popularity)."""
    from newsrec_cli.model.inputs import needed_news, recent_history  # torch: ONNX serving imports this file

    news = needed_news(imps)
    compact = np.zeros(int(news.max(initial=0)) + 1, dtype=np.int64)
    compact[news] = np.arange(1, len(news) + 1)
    vectors = backend.encode_news(inputs.rows(news))  # inputs are indexed by news index
    if table is not None:
        vectors = table(vectors)
    table = np.concatenate([np.zeros((1, vectors.shape[1]), np.float32), vectors])
    states = []
    for start in range(0, len(imps), 256):
        rows = np.arange(start, min(start + 256, len(imps)))
        hist, mask = recent_history(imps, rows, history)
        users = np.zeros(len(rows), np.int64) if user_rows is None else user_rows[rows]
        states.append(backend.encode_users(table[compact[hist]], mask, users))
    state = np.concatenate(states)
    imp_of = imps.candidate_impression
    cand = compact[imps.candidates.astype(np.int64)]
    scores = np.empty(len(cand), dtype=np.float32)
    lengths = np.asarray(imps.history_lengths, np.float32)[imp_of]
    for start in range(0, len(cand), 65536):
        part = slice(start, start + 65536)
        extra = (
            {}
            if popularity is None
            else {"popularity": popularity[part][:, None, :], "history_length": lengths[part][:, None]}
        )
        scores[part] = backend.score(state[imp_of[part]], table[cand[part]][:, None, :], **extra)[:, 0]
    return scores


# ----------------------------------------------------------------------------- ONNX graphs


def _wrappers(model: Any) -> dict[str, Any]:
    from torch import nn  # ONNX serving imports this file

    from newsrec_cli.model.popularity import add_to_logits  # torch: ONNX serving imports this file

    with_text = model.news_encoder.text is not None

    class NewsGraph(nn.Module):
        """Per-news inputs -> news vectors: attach the inputs as the vocabulary, encode all rows."""

        def __init__(self, names: list[str]) -> None:
            super().__init__()
            self.model = model
            self.names = names

        def forward(self, *args):  # type: ignore[no-untyped-def]
            return encode_news_with(self.model, dict(zip(self.names, args, strict=True)))

    class MethodGraph(nn.Module):
        """One method of the model (a dotted path: `popularity.news_term`) as a graph to trace."""

        def __init__(self, path: str) -> None:
            super().__init__()
            self.model = model
            self.path = path

        def forward(self, *args):  # type: ignore[no-untyped-def]
            fn: Any = self.model
            for name in self.path.split("."):
                fn = getattr(fn, name)
            return fn(*args)

    class ScoreGraph(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, user_state, candidates, *popularity):  # type: ignore[no-untyped-def]
            logits = self.model.score(user_state, candidates)
            if not popularity:
                return logits
            features, history_length = popularity
            return add_to_logits(
                self.model, logits, {"popularity": features, "history_length": history_length}
            )

    with_popularity = getattr(model, "popularity", None) is not None
    return {
        "news": NewsGraph,
        "user": MethodGraph("encode_user_state"),
        "score": ScoreGraph(),
        "keys": MethodGraph("score_keys"),
        "queries": MethodGraph("score_queries"),
        "popularity_keys": MethodGraph("popularity.news_term") if with_popularity else None,
        "popularity_queries": MethodGraph("popularity.user_weight") if with_popularity else None,
        "with_text": with_text,
    }


def export_graphs(model: Any, inputs: NewsInputs, out: Path, opset: int) -> dict[str, Any]:
    """Trace the three graphs with dynamic batch/history/candidate axes; returns their shapes."""
    import torch  # ONNX serving imports this file

    wrappers = _wrappers(model)
    sample = inputs.rows(slice(0, min(5, len(inputs))))
    if inputs.graph_present is not None:
        # Trace with news both on and off the graph, so neither branch is folded away.
        on, off = np.flatnonzero(inputs.graph_present), np.flatnonzero(~inputs.graph_present)
        pick = np.concatenate([on[:3], off[:2]]) if len(on) else np.arange(min(5, len(inputs)))
        sample = inputs.rows(pick)
        if not len(off):
            sample.graph_present = sample.graph_present.copy()
            sample.graph_present[-1] = False
    feed = sample.as_dict()
    news_names = [n for n in NEWS_INPUTS if n in feed]
    news_args = [torch.from_numpy(feed[n]) for n in news_names]
    wrappers["news"] = wrappers["news"](news_names)
    with torch.no_grad():
        dim = int(wrappers["news"](*news_args).shape[-1])
    B, H, K = 2, 3, 4  # sizes > 1 so nothing is traced as a broadcast constant
    clicked = torch.randn(B, H, dim)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    users = torch.zeros(B, dtype=torch.long)
    with torch.no_grad():
        state = wrappers["user"](clicked, mask, users)
    state_dyn = {0: "batch", 1: "state"}  # a candidate-aware state grows with the history
    jobs = {
        "news": (
            tuple(news_args),
            news_names,
            ["vectors"],
            {n: {0: "news"} for n in [*news_names, "vectors"]},
        ),
        "user": (
            (clicked, mask, users),
            list(USER_INPUTS),
            ["user_state"],
            {"clicked": {0: "batch", 1: "history"}, "mask": {0: "batch", 1: "history"}, "users": {0: "batch"}}
            | {"user_state": state_dyn},
        ),
        "score": (
            (state, torch.randn(B, K, dim)),
            list(SCORE_INPUTS),
            ["logits"],
            {
                "user_state": state_dyn,
                "candidates": {0: "batch", 1: "candidates"},
                "logits": {0: "batch", 1: "candidates"},
            },
        ),
    }
    with_popularity = getattr(model, "popularity", None) is not None
    if with_popularity:
        # The popularity head's inputs: per-candidate features and the users' history lengths,
        # plausible values (counts >= 0, a CTR in (0, 1), the seen flag) so no branch folds away.
        features = torch.rand(B, K, len(POPULARITY_FEATURES)) * torch.tensor([5.0, 50.0, 0.9, 48.0, 1.0])
        features[..., 4] = features[..., 4].round()
        lengths = torch.tensor([[3.0], [0.0]])
        args, names, outputs, axes = jobs["score"]
        jobs["score"] = (
            (*args, features, lengths),
            [*names, *POPULARITY_INPUTS],
            outputs,
            axes | {"popularity": {0: "batch", 1: "candidates"}, "history_length": {0: "batch"}},
        )
    if model.inner_product_score:
        jobs["keys"] = (
            (torch.randn(B * K, dim),),
            list(KEYS_INPUTS),
            ["keys"],
            {"vectors": {0: "news"}, "keys": {0: "news"}},
        )
        jobs["queries"] = (
            (state,),
            list(QUERIES_INPUTS),
            ["queries"],
            {"user_state": state_dyn, "queries": {0: "batch"}},
        )
    if model.inner_product_score and with_popularity:
        jobs["popularity_keys"] = (
            (features.reshape(B * K, -1),),
            list(POPULARITY_KEYS_INPUTS),
            ["terms"],
            {"popularity": {0: "news"}, "terms": {0: "news"}},
        )
        jobs["popularity_queries"] = (
            (lengths,),
            list(POPULARITY_QUERIES_INPUTS),
            ["weights"],
            {"history_length": {0: "batch"}, "weights": {0: "batch"}},
        )
    for part, (args, names, outputs, axes) in jobs.items():
        wrapper = wrappers[part].eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings on shape arithmetic are expected
            torch.onnx.export(
                wrapper,
                args,
                str(out / (GRAPHS | RETRIEVAL_GRAPHS | POPULARITY_GRAPHS)[part]),
                dynamo=False,
                input_names=names,
                output_names=outputs,
                dynamic_axes=axes,
                opset_version=opset,
            )
        model.eval()  # export restores the wrapper's mode; keep the model in eval
    return {
        "dim": dim,
        "retrieval": "keys" if model.inner_product_score else "model",
        "popularity_graphs": "popularity_keys" in jobs,
        "user_state": [None, *state.shape[1:]],
        "text_dim": None if inputs.text is None else int(inputs.text.shape[1]),
        "graph_dim": None if inputs.graph_vector is None else int(inputs.graph_vector.shape[1]),
    }


class _NoPreprocessingAdvice(logging.Filter):
    """onnxruntime's quantizer logs "consider pre-processing" on the root logger for every graph.

    Its pre-processing (shape inference, graph fusion) is for models traced from other tools; the
    parity check below is what tells whether int8 holds here. Only that one message is dropped.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Please consider to run pre-processing before quantization")


def quantize_graphs(out: Path, fp32: dict[str, str]) -> dict[str, str]:
    """The int8 graph set: each part in QUANTISED quantised, kept when smaller on disk than its
    fp32 file; every other part names its fp32 file."""
    from onnxruntime.quantization import QuantType, quantize_dynamic  # optional extra: only when exporting

    names = dict(fp32)
    advice = _NoPreprocessingAdvice()
    logging.root.addFilter(advice)  # the quantizer logs through logging.warning(), i.e. the root logger
    try:
        for part in QUANTISED:
            source, target = out / fp32[part], out / fp32[part].replace(".onnx", ".int8.onnx")
            quantize_dynamic(
                str(source),
                str(target),
                weight_type=QuantType.QInt8,
                per_channel=False,
                # 7-bit weights: without VNNI the 8-bit products saturate (onnxruntime's own advice);
                # measured: AUC drift -0.0023 -> -0.0014 on the test run.
                reduce_range=True,
                # Embedding tables (Gather) are quantised per row below: onnxruntime's one scale
                # for a whole table cost ranking quality.
                op_types_to_quantize=["MatMul", "Gemm"],
            )
            quantise_embedding_rows(target)
            if target.stat().st_size < source.stat().st_size:
                names[part] = target.name
            else:
                target.unlink()
    finally:
        logging.root.removeFilter(advice)
    return names


def quantise_embedding_rows(path: Path, min_rows: int = 64) -> None:
    """Rewrite each Gather of a float32 table initializer ([rows, D], rows >= `min_rows`) as a
    Gather of int8 codes times a Gather of per-row scales: 4x smaller, a vector's error bounded by
    its own largest component / 254 (onnxruntime quantises Gather with one scale per table)."""
    import onnx  # optional extra: only when exporting
    from onnx import helper, numpy_helper  # optional extra

    model = onnx.load(str(path))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    users: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    nodes = []
    changed = False
    for node in graph.node:
        table = inits.get(node.input[0]) if node.op_type == "Gather" and node.input else None
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if (
            table is None
            or axis != 0
            or users.get(table.name) != 1
            or table.data_type != onnx.TensorProto.FLOAT
            or len(table.dims) != 2
            or table.dims[0] < min_rows
        ):
            nodes.append(node)
            continue
        weights = numpy_helper.to_array(table)
        codes, scales = quantise(weights, [0, weights.shape[1]])
        base = table.name
        graph.initializer.remove(table)
        graph.initializer.extend(
            [
                numpy_helper.from_array(codes, f"{base}_rows_int8"),
                numpy_helper.from_array(scales, f"{base}_rows_scale"),
            ]
        )
        index, out = node.input[1], node.output[0]
        nodes += [
            helper.make_node("Gather", [f"{base}_rows_int8", index], [f"{out}_codes"], axis=0),
            helper.make_node("Cast", [f"{out}_codes"], [f"{out}_float"], to=onnx.TensorProto.FLOAT),
            helper.make_node("Gather", [f"{base}_rows_scale", index], [f"{out}_scale"], axis=0),
            helper.make_node("Mul", [f"{out}_float", f"{out}_scale"], [out]),
        ]
        changed = True
    if changed:
        del graph.node[:]
        graph.node.extend(nodes)
        onnx.checker.check_model(model)
        onnx.save(model, str(path))


def graph_files(folder: Path, names: dict[str, str]) -> dict[str, Path | None]:
    """Paths of a graph set (news, user, score, and keys/queries and the popularity factors when
    the export has them)."""
    parts = (*GRAPHS, *RETRIEVAL_GRAPHS, *POPULARITY_GRAPHS)
    return {part: folder / names[part] if names.get(part) else None for part in parts}


def manifest_graphs(manifest: dict[str, Any], int8: bool) -> dict[str, str]:
    """The graph names of the fp32 or int8 set of an export (version 1 named no keys/queries)."""
    graphs = manifest.get("graphs") or {}
    names = graphs.get("int8" if int8 else "fp32")
    if not isinstance(names, dict):
        raise InputError(
            f"this export has no {'int8' if int8 else 'fp32'} graphs"
            + (" (export with --quantize int8)" if int8 else ""),
            path=MANIFEST,
            field="graphs",
        )
    return {str(k): str(v) for k, v in names.items() if v}


# ----------------------------------------------------------------------------- the export


def _write_table(
    path: Path,
    ids: list[str],
    vectors: np.ndarray,
    version: str,
    run_dir: Path,
    kind: str = "model-news",
    dtype: Dtype = "float32",
    parts: list[int] | None = None,
) -> None:
    signature = {
        "kind": kind,
        "provider": "newsrec-model",
        "model": version,
        "dimension": int(vectors.shape[1]),
        "template": "",
        "normalized": False,
        "run": str(run_dir.resolve()),
    }
    write_table(path, ids, vectors, signature, dtype, parts or [0, int(vectors.shape[1])])


def table_parts(model: Any) -> list[int]:
    """Column bounds of a news vector's parts: the learned vector, then the prior's text vector."""
    return [0, model.news_dim, model.dim] if model.prior_dim else [0, model.dim]


def _write_news_tsv(path: Path, run: Any, ids: list[str]) -> None:
    """MIND rows of the exported news, from the run's dataset when it is still there."""
    from newsrec_cli.runs.files import NEWS_TABLE, load_news_table  # torch: ONNX serving imports this file

    data = run.config.get("data", {}).get("path")
    rows: dict[str, str] = {}
    try:
        table = load_dataset(data, behaviors=False, on_bad_lines="skip", bad_entities="collect").news
        for id_ in ids:
            r = table.index.get(id_)
            if r is not None:
                rows[id_] = "\t".join(
                    [
                        id_,
                        table.category[r],
                        table.subcategory[r],
                        table.title[r],
                        table.abstract[r],
                        table.url[r],
                    ]
                    + [_entities_json(table.title_entities[r]), _entities_json(table.abstract_entities[r])]
                )
    except (NewsrecError, OSError, TypeError):
        pass  # the data moved: categories from the run, no titles
    _, run_table = load_news_table(run.run_dir / NEWS_TABLE)
    lines = []
    for id_ in ids:
        if id_ in rows:
            lines.append(rows[id_])
        else:
            r = run_table.index[id_]
            lines.append(
                "\t".join([id_, run_table.category[r], run_table.subcategory[r], "", "", "", "[]", "[]"])
            )
    atomic.write_text(path, "".join(line + "\n" for line in lines))


def _entities_json(entities: list[Any]) -> str:
    return json.dumps(
        [
            {
                "Label": e.label,
                "Type": e.type,
                "WikidataId": e.wikidata_id,
                "Confidence": e.confidence,
                "OccurrenceOffsets": list(e.offsets),
                "SurfaceForms": list(e.surface_forms),
            }
            for e in entities
        ]
    )


def validation_impressions(run: Any, limit: int) -> tuple[Any, Any]:
    """(dataset, the first `limit` validation impressions the run was validated on)."""
    data = run.config.get("data", {}).get("path")
    if not data or not Path(data).exists():
        raise InputError("the run's data folder is gone (parity needs its validation split)", path=data or "")
    dataset = load_dataset(data, on_bad_lines=run.data_settings.on_bad_lines)
    valid = select_split(dataset, "valid", run.data_settings).impressions
    if not valid.labeled:
        raise InputError("the validation impressions have no labels; parity needs them", path=valid.source)
    keep = np.arange(min(limit, len(valid)))
    return dataset, valid.subset(keep)


@dataclass
class Written:
    """What `_write_model` put in the export folder, for parity and the manifest."""

    version: str
    served_ids: list[str]
    inputs: NewsInputs  # of every news the run knows
    keep: np.ndarray  # the servable rows of `inputs`
    shapes: dict[str, Any]  # export_graphs' answer
    fp32_names: dict[str, str]
    int8_names: dict[str, str]
    parts: list[int]  # column bounds of the int8 table's parts
    frozen: Any = None  # MemorySums: the counts served until events arrive (popularity runs)


@dataclass
class Parity:
    """The parity check's rows (torch, onnx fp32, onnx int8) and the popularity product's diff."""

    rows: list[dict[str, Any]]
    impressions: int
    product_diff: float | None
    graph_inputs: dict[str, list[str]]  # the input names of the fp32 news and user graphs


def export_run(
    run_dir: Path,
    out: Path,
    *,
    quantize: str = "int8",
    opset: int = 17,
    parity_impressions: int = 2000,
    store: Path | None = None,
    say: Say | None = None,
) -> ExportReport:
    """Export `run_dir` to `out` (see the module docstring); ParityError when a graph is off."""
    from newsrec_cli.runs.loading import load_run  # torch: ONNX serving imports this file

    say = say or (lambda _m: None)
    if quantize not in QUANTIZE:
        raise SettingsError(f"--quantize {quantize!r}: none, int8 or int8-only")
    if not 13 <= opset <= 21:
        raise SettingsError(f"--opset {opset}: choose 13 to 21")
    started = time.perf_counter()
    say(f"loading {run_dir}")
    run = load_run(run_dir, device="cpu", store=store)
    refuse_finetuned(run, "export")
    _clear_folder(out)
    written = _write_model(run, out, quantize, opset, say)
    _write_side_files(run, out, written, say)
    say("checking parity on the validation split")
    parity = _check_parity(run, out, written, parity_impressions)
    if quantize == "int8-only":  # what the int8 set does not name goes, once parity used it
        for name in set(written.fp32_names.values()) - set(written.int8_names.values()):
            (out / name).unlink()
        shutil.rmtree(out / TABLE)
        shutil.rmtree(out / GRAPH_TABLE, ignore_errors=True)
    files = {
        str(p.relative_to(out)): sha256(p)
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != MANIFEST and ".staging" not in p.parts
    }
    atomic.write_json(out / MANIFEST, _manifest(run, written, parity, quantize, opset, files))
    return ExportReport(
        out=out,
        model_version=written.version,
        news=len(written.served_ids),
        dim=written.shapes["dim"],
        opset=opset,
        quantize=quantize,
        parity=parity.rows,
        files=files,
        seconds=time.perf_counter() - started,
        parity_impressions=parity.impressions,
    )


def _clear_folder(out: Path) -> None:
    """Make `out` an empty export folder: refuse one that holds something else, drop the
    manifest (none until parity passed) and what an earlier export there wrote."""
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST).exists():
        raise InputError("exists, is not empty and is not an export; choose another --out", path=out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)
    for stale in (TABLE, TABLE_INT8, GRAPH_TABLE, GRAPH_TABLE_INT8, TEXT_TABLE):
        shutil.rmtree(out / stale, ignore_errors=True)
    for stale in out.glob("*.onnx"):
        stale.unlink()
    (out / POPULARITY_FILE).unlink(missing_ok=True)


def _write_model(run: Any, out: Path, quantize: str, opset: int, say: Say) -> Written:
    """The ONNX graphs (fp32, and int8 unless --quantize none) and the news-vector tables."""
    version = model_version(run.run_dir)
    ids, inputs, servable = run_news_inputs(run)
    say(f"exporting ONNX graphs (opset {opset})")
    shapes = export_graphs(run.model, inputs, out, opset)
    fp32_names = dict(GRAPHS) | (dict(RETRIEVAL_GRAPHS) if shapes["retrieval"] == "keys" else {})
    fp32_names |= dict(POPULARITY_GRAPHS) if shapes["popularity_graphs"] else {}
    say(f"encoding {len(ids):,} news")
    keep = np.flatnonzero(servable)
    served_ids = [ids[i] for i in keep]
    vectors = TorchBackend(run.model).encode_news(inputs.rows(keep))
    parts = table_parts(run.model)
    _write_table(out / TABLE, served_ids, vectors, version, run.run_dir)
    int8_names = quantize_graphs(out, fp32_names) if quantize != "none" else {}
    if int8_names:
        int8_vectors = OnnxBackend(graph_files(out, int8_names), "int8").encode_news(inputs.rows(keep))
        _write_table(
            out / TABLE_INT8, served_ids, int8_vectors, version, run.run_dir, dtype="int8", parts=parts
        )
    if inputs.text is not None:
        # The re-rankers' similarity (serve's rerank mmr), the same vectors as evaluate's.
        text = inputs.text[keep]
        dtype = "int8" if quantize == "int8-only" else "float32"
        _write_table(out / TEXT_TABLE, served_ids, text, version, run.run_dir, "text", dtype=dtype)
    if inputs.graph_vector is not None and inputs.graph_present is not None:
        # So that a run news re-sent through POST /v1/news keeps its graph vector.
        on = keep[inputs.graph_present[keep]]
        graph_ids, graph_vectors = [ids[i] for i in on], inputs.graph_vector[on]
        _write_table(out / GRAPH_TABLE, graph_ids, graph_vectors, version, run.run_dir, "model-graph")
        if int8_names:
            whole = [0, int(graph_vectors.shape[1])]
            _write_table(
                out / GRAPH_TABLE_INT8,
                graph_ids,
                graph_vectors,
                version,
                run.run_dir,
                "model-graph",
                "int8",
                whole,
            )
    return Written(version, served_ids, inputs, keep, shapes, fp32_names, int8_names, parts)


def _write_side_files(run: Any, out: Path, written: Written, say: Say) -> None:
    """news.tsv, the vocabularies, and a popularity run's frozen counts (what the server reads
    until events arrive: the offline protocol's)."""
    _write_news_tsv(out / NEWS_TSV, run, written.served_ids)
    for name in VOCABS:
        if (run.run_dir / name).is_file():
            shutil.copyfile(run.run_dir / name, out / name)
    if getattr(run.model, "popularity", None) is not None:
        say("counting popularity over the training impressions")
        written.frozen = frozen_counts(run)
        written.frozen.save(out / POPULARITY_FILE)


def _reference_logits(run: Any, dataset: Any, valid: Any, frozen: Any) -> tuple[np.ndarray, Any]:
    """Torch's logits as evaluate scores them (offline protocol with popularity), and the
    popularity features of each candidate slot the graphs read (the frozen counts, as served)."""
    from newsrec_cli.model.inference import score_impressions  # torch: ONNX serving imports this file

    if frozen is None:
        return score_impressions(run, dataset, valid), None
    known = select_split(dataset, "valid", run.data_settings).train
    logits = run_scores(run, dataset, valid, known, "offline").astype(np.float32)
    ids = dataset.news_vocab.ids
    return logits, RunningCounts(frozen.spec, frozen).features([ids[i] for i in valid.candidates])


def _check_parity(run: Any, out: Path, written: Written, impressions: int) -> Parity:
    """Torch (what evaluate scores) against each graph set on the validation split; ParityError
    when fp32 is off by more than FP32_TOLERANCE or int8's AUC by more than INT8_AUC_TOLERANCE."""
    dataset, valid = validation_impressions(run, impressions)
    torch_logits, popularity = _reference_logits(run, dataset, valid, written.frozen)
    inputs = dataset_news_inputs(run, dataset, valid)
    score = partial(
        backend_scores,
        inputs=inputs,
        imps=valid,
        history=run.settings.history,
        user_rows=run.user_rows(valid),
        popularity=popularity,
    )
    fp32 = OnnxBackend(graph_files(out, written.fp32_names), "onnx")
    t0 = time.perf_counter()
    fp32_logits = score(fp32)
    rows = [
        _parity_row("torch", valid, torch_logits, None, 0.0),
        _parity_row("onnx fp32", valid, fp32_logits, torch_logits, time.perf_counter() - t0),
    ]
    if written.int8_names:
        int8 = OnnxBackend(graph_files(out, written.int8_names), "int8")
        t0 = time.perf_counter()
        # the int8 tables' round trips: what they give back (news vectors, and the graph vectors
        # a run news re-sent through POST /v1/news is encoded from)
        table = partial(roundtrip, dtype="int8", parts=written.parts)
        int8_logits = score(int8, inputs=int8_graph_inputs(inputs), table=table)
        rows.append(_parity_row("onnx int8", valid, int8_logits, fp32_logits, time.perf_counter() - t0))
        rows[-1]["auc_diff_vs_fp32"] = rows[-1]["auc"] - rows[1]["auc"]
    diff = rows[1]["max_abs_logit_diff"]
    if not diff <= FP32_TOLERANCE:
        raise ParityError(f"export: fp32 ONNX logits differ from torch by {diff:.3g} (> {FP32_TOLERANCE})")
    product_diff = None
    if popularity is not None and fp32.popularity_product:
        lengths = np.asarray(valid.history_lengths, np.float32)[valid.candidate_impression][:, None]
        product_diff = popularity_product_diff(fp32, run.model.popularity, popularity, lengths)
        if not product_diff <= FP32_TOLERANCE:
            raise ParityError(
                f"export: the popularity graphs' product differs from the torch term by {product_diff:.3g} "
                f"(> {FP32_TOLERANCE})"
            )
    if written.int8_names:
        auc_diff = rows[2]["auc_diff_vs_fp32"]
        if not abs(auc_diff) <= INT8_AUC_TOLERANCE or not np.isfinite(auc_diff):
            raise ParityError(
                f"export: int8 AUC differs from fp32 by {auc_diff:+.4f} (> {INT8_AUC_TOLERANCE}); export with --quantize none"
            )
    graph_inputs = {part: list(fp32.inputs[part]) for part in ("news", "user")}
    return Parity(rows, len(valid), product_diff, graph_inputs)


PARITY_METRICS = ("auc", "mrr", "ndcg@10")


def int8_graph_inputs(inputs: NewsInputs) -> NewsInputs:
    """`inputs` with the graph vectors the int8 graph table gives back (the rest as it is)."""
    if inputs.graph_vector is None:
        return inputs
    whole = [0, int(inputs.graph_vector.shape[1])]
    return replace(inputs, graph_vector=roundtrip(inputs.graph_vector, "int8", whole))


def _parity_row(
    name: str, valid: Any, logits: np.ndarray, reference: np.ndarray | None, seconds: float
) -> dict[str, Any]:
    metrics = list(PARITY_METRICS)
    result = compute_metrics(logits, valid.labels, valid.candidate_offsets, metrics)
    return {
        "backend": name,
        "max_abs_logit_diff": None if reference is None else float(np.abs(logits - reference).max()),
        **{m: float(result.values[m]) for m in metrics},
        "seconds": round(seconds, 3),
    }


def _manifest(
    run: Any, written: Written, parity: Parity, quantize: str, opset: int, files: dict[str, str]
) -> dict[str, Any]:
    """export.json: what the folder holds, what made it, and the parity it passed."""
    import onnxruntime  # optional extra: only when exporting
    import torch  # ONNX serving imports this file

    fp32, int8 = written.fp32_names, written.int8_names
    only = quantize == "int8-only"
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "newsrec": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "run_dir": str(run.run_dir.resolve()),
        "model_version": written.version,
        "config_sha256": sha256(run.run_dir / "config.json"),
        "opset": opset,
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
        "quantize": quantize,
        "graphs": {"fp32": None if only else fp32, "int8": int8 or None},
        # keys: retrieval searches keys.onnx's output with queries.onnx's; model: every news is
        # scored through scorer.onnx (a score that is no inner product, e.g. candidate attention)
        "retrieval": written.shapes["retrieval"],
        "tables": {
            "fp32": None if only else {"path": TABLE, "dtype": "float32"},
            "int8": {"path": TABLE_INT8, "dtype": "int8", "parts": written.parts} if int8 else None,
        },
        # graph runs: the GNN vector of each run news, for each backend (int8: as int8)
        "graph_tables": _manifest_graph_tables(written.shapes, only, bool(int8)),
        "text_table": (
            {"path": TEXT_TABLE, "dtype": "int8" if only else "float32"}
            if written.inputs.text is not None
            else None
        ),
        "inputs": parity.graph_inputs,
        "shapes": _manifest_shapes(written.shapes, run.settings.history),
        "news": len(written.served_ids),
        "popularity": _manifest_popularity(run, written.frozen),
        "history": run.settings.history,
        "use_user_id": bool(run.settings.use_user_id),
        "missing": run.settings.missing,
        "embeddings": _manifest_embeddings(run),
        "parity": {
            "impressions": parity.impressions,
            "rows": parity.rows,
            "fp32_tolerance": FP32_TOLERANCE,
            "int8_auc_tolerance": INT8_AUC_TOLERANCE,
            # popularity_keys x popularity_queries against the torch head's term (retrieval's form)
            "popularity_product_max_abs_diff": parity.product_diff,
        },
        "checksums": files,
    }


def _manifest_shapes(shapes: dict[str, Any], history: int) -> dict[str, Any]:
    return {
        "news_vector": [None, shapes["dim"]],
        "user_state": shapes["user_state"],
        "text_vector": [None, shapes["text_dim"]] if shapes["text_dim"] else None,
        "graph_vector": [None, shapes["graph_dim"]] if shapes["graph_dim"] else None,
        "history": history,
    }


def _manifest_graph_tables(shapes: dict[str, Any], only: bool, int8: bool) -> dict[str, Any] | None:
    if not shapes["graph_dim"]:
        return None
    return {"fp32": None if only else GRAPH_TABLE, "int8": GRAPH_TABLE_INT8 if int8 else None}


def _manifest_popularity(run: Any, frozen: Any) -> dict[str, Any] | None:
    """A run trained with popularity: the scorer's popularity inputs and the frozen counts."""
    head = getattr(run.model, "popularity", None)
    if frozen is None or head is None:
        return None
    return {
        "head": head.mode,
        "counts": POPULARITY_FILE,
        "features": list(POPULARITY_FEATURES),
        "half_life_hours": run.settings.popularity_half_life,
        "prior": run.settings.popularity_prior,
    }


def _manifest_embeddings(run: Any) -> dict[str, Any] | None:
    """The text store's signature: how the server embeds fresh news."""
    meta = dict(run.text_store.meta) if run.text_store is not None else None
    if not meta:
        return None
    keys = ("provider", "model", "dimension", "template", "normalized")
    return {k: v for k, v in meta.items() if k in keys}


def popularity_product_diff(backend: Any, head: Any, features: np.ndarray, lengths: np.ndarray) -> float:
    """Max |popularity_keys x popularity_queries - the torch head's term| over candidate slots
    (features [C, F], history lengths [C, 1]): retrieval's form of the term against the scorer's."""
    import torch  # ONNX serving imports this file

    with torch.no_grad():
        term = head(torch.from_numpy(features[:, None, :]), torch.from_numpy(lengths))[:, 0].numpy()
    product = backend.popularity_keys(features) * backend.popularity_queries(lengths)
    return float(np.abs(product - term).max(initial=0.0))


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    manifest = manifests.read_manifest(path, EXPORT_FORMAT, "an export manifest")
    version = manifest.get("version")
    if not isinstance(version, int) or not 1 <= version <= EXPORT_VERSION:
        raise InputError(
            f"export version {version!r}: this newsrec reads versions 1 to {EXPORT_VERSION}; "
            "export the run again with this newsrec",
            path=path,
            field="version",
        )
    return manifest


def read_text_table(folder: Path, manifest: dict[str, Any], ids: list[str]) -> np.ndarray | None:
    """The text vectors of `ids` from the export's text table (float32, in the order of `ids`), or
    None where the export has none (a model without text, or an export made before text tables)."""
    entry = manifest.get("text_table")
    if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
        return None
    path = folder / entry["path"]
    text_ids, vectors, _ = read_table(path)
    index = {id_: row for row, id_ in enumerate(text_ids)}
    rows = [index.get(id_) for id_ in ids]
    missing = sum(row is None for row in rows)
    if missing:
        raise InputError(f"{missing:,} served news have no text vector", path=path, field="ids")
    return vectors[np.asarray(rows, np.int64)]


def manifest_table(manifest: dict[str, Any], int8: bool) -> str:
    """The folder of the fp32 or int8 news-vector table (version 1: both float32 stores)."""
    tables = manifest.get("tables")
    if tables is None:  # version 1
        return TABLE_INT8 if int8 else TABLE
    entry = tables.get("int8" if int8 else "fp32") if isinstance(tables, dict) else None
    if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
        raise InputError(
            f"this export has no {'int8' if int8 else 'fp32'} news-vector table",
            path=MANIFEST,
            field="tables",
        )
    return entry["path"]


def manifest_graph_table(manifest: dict[str, Any], int8: bool) -> str:
    """The folder of the graph vectors a backend reads: the int8 table for int8 when the export
    has one (exports before it hold the fp32 table alone)."""
    tables = manifest.get("graph_tables")
    if not isinstance(tables, dict):
        return GRAPH_TABLE
    name = tables.get("int8") if int8 else tables.get("fp32")
    if not isinstance(name, str):
        raise InputError(
            f"this export has no {'int8' if int8 else 'fp32'} graph-vector table",
            path=MANIFEST,
            field="graph_tables",
        )
    return name
