"""One SHA-256 file helper (`newsrec_cli.digests.file_sha256`, on `hashlib.file_digest`), none hand-written."""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

import pytest

import newsrec_cli
from newsrec_cli.digests import file_sha256

PACKAGE = Path(newsrec_cli.__file__).parent


@pytest.mark.parametrize("size", [0, 1, (1 << 20) + 7])
def test_file_sha256_is_the_sha256_of_the_bytes(tmp_path: Path, size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
    assert file_sha256(path) != hashlib.sha256(data + b"x").hexdigest()  # control: one byte more differs


def _hand_written_file_hashes(source: str) -> list[str]:
    """Functions that build a hashlib.sha256() and feed it a file read in a loop of blocks."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        calls = [n for n in ast.walk(node) if isinstance(n, ast.Call)]
        builds = any(ast.unparse(c.func) == "hashlib.sha256" and not c.args for c in calls)
        reads = any(isinstance(c.func, ast.Attribute) and c.func.attr in ("read", "readinto") for c in calls)
        loops = any(isinstance(n, ast.For | ast.While) for n in ast.walk(node))
        if builds and reads and loops:
            found.append(node.name)
    return found


def test_no_hand_written_sha256_file_helper() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE)}:{name}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if "hashlib.sha256()" in (text := path.read_text(encoding="utf-8"))  # parse only the candidates
        for name in _hand_written_file_hashes(text)
    ]
    assert offenders == []
    # control: the pattern the check looks for is found where it is written
    loop = (
        "def f(p):\n    d = hashlib.sha256()\n    with open(p, 'rb') as h:\n"
        "        for b in iter(lambda: h.read(1 << 20), b''):\n            d.update(b)\n    return d.hexdigest()\n"
    )
    assert _hand_written_file_hashes(loop) == ["f"]
