"""pyproject.toml declares every package llmload imports, and the suite runs within the declared bounds."""

import ast
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# Import name -> distribution name, where they differ.
DISTRIBUTIONS = {
    "hdrh": "hdrhistogram",
    "prometheus_client": "prometheus-client",
    "grafana_client": "grafana-client",
    "PIL": "pillow",
}
# Run by the vLLM venv's own Python (llmload target), never imported by llmload itself.
OTHER_INTERPRETER = {"llmload/target/_build_model.py"}
OPTIONAL = {"uvloop"}  # imported when present, with a fallback


def requirements() -> list[Requirement]:
    declared = [Requirement(r) for r in PROJECT["dependencies"]]
    for extra in PROJECT["optional-dependencies"].values():
        declared += [Requirement(r) for r in extra]
    return declared


def imported_packages() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "llmload").rglob("*.py"):
        if str(path.relative_to(ROOT)) in OTHER_INTERPRETER:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "llmload"} - OPTIONAL


def test_every_imported_package_is_declared():
    declared = {r.name.lower() for r in requirements()}
    missing = sorted(n for n in imported_packages() if DISTRIBUTIONS.get(n, n).lower() not in declared)
    assert missing == []


@pytest.mark.parametrize("name", ["locust", "geventhttpclient", "hdrhistogram"])
def test_internals_are_bounded_from_above_and_the_installed_version_is_within(name):
    requirement = next(r for r in requirements() if r.name == name)
    assert any(spec.operator in ("<", "<=", "~=", "==") for spec in requirement.specifier), requirement
    try:
        installed = version(name)
    except PackageNotFoundError:  # pragma: no cover
        pytest.fail(f"{name} is not installed")
    assert requirement.specifier.contains(installed, prereleases=True), (name, installed, str(requirement))
