"""The docs stay true to the code: the test script lists skip reasons, the README names every test
file that needs ../shared, and no module points the reader at a file the repository lacks."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What a test file uses when it reads ../shared/data (directly or through a helper that skips).
SHARED_MARKERS = ("shared_data", "need_shared(", "real_lines", "relation_rows", "real_graph")


def test_the_test_script_lists_skipped_tests_with_their_reasons() -> None:
    lines = [line for line in (ROOT / "scripts" / "test.sh").read_text().splitlines() if "pytest" in line]
    command = [line for line in lines if not line.lstrip().startswith("#")]
    assert command and all(re.search(r"\s-r\w*s", line) for line in command), command


def test_the_readme_names_every_test_file_that_needs_shared_fixtures() -> None:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("### Tests that need `../shared`")
    end = readme.find("\n#", start + 5)
    section = readme[start : end if end > 0 else len(readme)]
    needing = sorted(
        path.name
        for path in (ROOT / "tests").glob("test_*.py")
        if path.name != Path(__file__).name and any(m in path.read_text() for m in SHARED_MARKERS)
    )
    assert needing, "no test reads ../shared: the marker list is out of date"
    missing = [name for name in needing if f"`{name}`" not in section]
    assert not missing, f"README does not say these tests need ../shared: {missing}"


def test_no_module_refers_to_a_file_the_repository_lacks() -> None:
    named = re.compile(r"\b([A-Z][A-Z_]+\.md)\b")
    for path in (ROOT / "newsrec_cli").rglob("*.py"):
        for name in named.findall(path.read_text()):
            assert (ROOT / name).exists(), (
                f"{path.relative_to(ROOT)} refers to {name}, which is not in the repository"
            )
