"""The committed cockpit page is what its sources build: a clean copy, `npm ci`, `npm run build`, compared.

The sources (llmload/webui_app: package.json, package-lock.json, index.html,
vite and TypeScript settings, src/) are copied without node_modules and
dist, installed exactly from the lockfile from the npm registry, and built;
every file of the new dist must equal the committed one byte for byte. Needs
Node.js 20.19 or newer (`make test` checks for it); without it the test
skips, except under CI, where it fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.processes import ROOT

pytestmark = pytest.mark.integration

APP = ROOT / "llmload" / "webui_app"


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_committed_build_is_what_the_sources_build(tmp_path):
    npm = shutil.which("npm")
    node_ok = npm is not None and (
        subprocess.run(
            [
                "node",
                "-e",
                "const [a,b]=process.versions.node.split('.').map(Number);process.exit(a>20||(a===20&&b>=19)?0:1)",
            ],
            check=False,
        ).returncode
        == 0
    )
    if not node_ok:
        if os.environ.get("CI") == "true":
            pytest.fail("Node.js 20.19 or newer is missing (make test installs it)")
        pytest.skip("Node.js 20.19 or newer is missing")
    copy = tmp_path / "webui_app"
    shutil.copytree(APP, copy, ignore=shutil.ignore_patterns("node_modules", "dist"))
    for step in (["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], ["npm", "run", "build"]):
        done = subprocess.run(step, cwd=copy, capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, f"{' '.join(step)}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    built, committed = files_of(copy / "dist"), files_of(APP / "dist")
    assert sorted(built) == sorted(committed), "run `make webui` and commit llmload/webui_app/dist"
    changed = [name for name in built if built[name] != committed[name]]
    assert not changed, f"{changed} differ from the sources' build: run `make webui` and commit the result"
