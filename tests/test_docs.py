"""The docs stay true to the code: the README is one sitting and names real commands, the site builds
in strict mode with every page in its navigation, the development page names every test file that
needs ../shared, and no module points the reader at a file the repository lacks."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
import yaml

from newsrec_cli.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
# What a test file uses when it reads ../shared/data (directly or through a helper that skips).
SHARED_MARKERS = ("shared_data", "need_shared(", "real_lines", "relation_rows", "real_graph")


def _section(text: str, heading: str) -> str:
    """The body of the `## heading` section of a Markdown text, up to the next heading of any level."""
    start = text.index(f"\n{heading}\n")
    end = text.find("\n#", start + len(heading) + 2)
    return text[start : end if end > 0 else len(text)]


def _build(config_dir: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
        cwd=config_dir,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = _build(ROOT, out)
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}{result.stderr}"
    return out


def test_the_test_script_lists_skipped_tests_with_their_reasons() -> None:
    lines = [line for line in (ROOT / "scripts" / "test.sh").read_text().splitlines() if "pytest" in line]
    command = [line for line in lines if not line.lstrip().startswith("#")]
    assert command and all(re.search(r"\s-r\w*s", line) for line in command), command


def test_the_readme_is_read_in_one_sitting() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines; move detail into docs/"
    headings = [line[3:] for line in lines if line.startswith("## ")]
    for wanted in ("Set-up", "Quickstart", "Commands", "Reporting", "Results", "Documentation"):
        assert any(h.startswith(wanted) for h in headings), f"README lacks its {wanted} section: {headings}"


def test_every_command_in_the_readme_table_exists_and_its_help_has_an_example() -> None:
    table = _section(README.read_text(), "## Commands")
    listed = [row.split("`")[1].split() for row in table.splitlines() if row.startswith("| `newsrec ")]
    assert len(listed) >= 15, listed
    tree = typer.main.get_command(app)
    for words in listed:
        assert words[0] == "newsrec", words
        group, path = tree, []
        for word in words[1:]:
            sub = getattr(group, "commands", {}).get(word)
            if sub is None:
                break
            group, path = sub, [*path, word]
        assert path and path == words[1:], f"README's command `{' '.join(words)}` is not a newsrec command"
        # the text --help prints (tests/test_cli.py renders every one of them)
        shown = f"{group.help or ''}\n{group.epilog or ''}"
        assert "Example" in shown, f"newsrec {' '.join(path)} --help shows no example"
    top = {words[1] for words in listed}
    assert top == set(tree.commands), f"README's table misses or invents commands: {set(tree.commands) ^ top}"


def test_the_readme_quickstart_is_what_the_quickstart_script_runs() -> None:
    block = _section(README.read_text(), "## Quickstart").split("```bash\n")[1].split("```")[0]
    readme = [line.split("#")[0].split() for line in block.splitlines() if line.startswith("newsrec ")]
    script = (ROOT / "scripts" / "quickstart.sh").read_text().replace('"$D', '"demo').replace('"', "")
    ran = [line.split() for line in script.splitlines() if line.startswith("newsrec ")]
    assert readme and readme == ran


def test_every_page_is_in_the_navigation(site: Path) -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    nav = {next(iter(entry.values())) for entry in config["nav"]}
    pages = {path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md")}
    pages = {page for page in pages if not page.startswith("_incoming/")}
    assert pages == nav, f"pages outside the navigation, or navigation without a page: {pages ^ nav}"
    for page in nav:
        assert (site / Path(page).with_suffix("") / "index.html").exists() or page == "index.md", page


def test_every_readme_link_into_docs_names_a_page_and_an_anchor_that_exist(site: Path) -> None:
    links = re.findall(r"\]\((docs/[^)#\s]+)(?:#([^)\s]+))?\)", README.read_text())
    assert len(links) >= 15, links
    for target, anchor in links:
        assert (ROOT / target).exists(), f"README links {target}, which does not exist"
        if target.endswith(".md") and anchor:
            stem = Path(target).relative_to("docs").with_suffix("")
            html = site / ("index.html" if stem.as_posix() == "index" else stem / "index.html")
            assert f'id="{anchor}"' in html.read_text(), f"README links {target}#{anchor}: no such heading"


def test_the_strict_build_fails_on_a_broken_link_but_ignores_incoming_notes(tmp_path: Path) -> None:
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copytree(DOCS, tmp_path / "docs", ignore=shutil.ignore_patterns("_incoming"))
    note = tmp_path / "docs" / "_incoming" / "helper.md"
    note.parent.mkdir()
    note.write_text("# Training\n\nSee [nowhere](missing.md) and ![a plot](missing.png).\n")
    assert _build(tmp_path, tmp_path / "site").returncode == 0
    page = tmp_path / "docs" / "data.md"
    page.write_text(page.read_text() + "\nSee [nowhere](missing.md).\n")
    broken = _build(tmp_path, tmp_path / "site2")
    assert broken.returncode != 0 and "missing.md" in broken.stdout + broken.stderr


def test_the_development_page_names_every_test_file_that_needs_shared_fixtures() -> None:
    section = _section((DOCS / "development.md").read_text(), "## Tests that need `../shared`")
    needing = sorted(
        path.name
        for path in (ROOT / "tests").glob("test_*.py")
        if path.name != Path(__file__).name and any(m in path.read_text() for m in SHARED_MARKERS)
    )
    assert needing, "no test reads ../shared: the marker list is out of date"
    missing = [name for name in needing if f"`{name}`" not in section]
    assert not missing, f"docs/development.md does not say these tests need ../shared: {missing}"


def test_no_module_refers_to_a_file_the_repository_lacks() -> None:
    named = re.compile(r"\b([A-Z][A-Z_]+\.md)\b")
    for path in (ROOT / "newsrec_cli").rglob("*.py"):
        for name in named.findall(path.read_text()):
            assert (ROOT / name).exists(), (
                f"{path.relative_to(ROOT)} refers to {name}, which is not in the repository"
            )
