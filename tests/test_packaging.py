"""The distribution as users install it: its name, its license, and what the installed package holds.

`make test-wheel` (.ci/test-wheel) runs the unit tests against a wheel built from the checkout; there
`test_installed_distribution` checks the wheel's own metadata and file list.
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import sys
from pathlib import Path

import pytest

import steer

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
DIST = "steer-neurons"  # `steer` on PyPI is an unrelated package; the import name and the command stay `steer`


def test_pyproject_names_a_free_distribution_with_the_steer_command():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == DIST
    assert project["scripts"] == {"steer": "steer.cli:main"}
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]


def test_license_file_is_the_mit_license_it_announces():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n")
    assert "Copyright (c) 2026 the steer authors" in text
    assert "THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND" in text


def test_installed_distribution():
    try:
        dist = metadata.distribution(DIST)
    except metadata.PackageNotFoundError:
        pytest.fail(f"no '{DIST}' distribution installed: this environment predates the name; run `make install`")
    assert dist.version == steer.__version__
    assert dist.metadata["License-Expression"] == "MIT"
    scripts = {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}
    assert scripts == {"steer": "steer.cli:main"}
    direct = dist.read_text("direct_url.json")
    if direct and json.loads(direct).get("dir_info", {}).get("editable"):
        return  # an editable install lists no package files; the wheel's are checked under `make test-wheel`
    if Path(str(dist.locate_file(""))).resolve() == ROOT:
        return  # the checkout's own steer_neurons.egg-info (an editable install's, found first on sys.path)
    files = {str(f) for f in dist.files or ()}
    for name in ("steer/__init__.py", "steer/bench/demo.toml", "steer/cli.py"):
        assert name in files, f"the installed distribution lacks {name}"
    assert any(f.endswith("licenses/LICENSE") for f in files), "the wheel carries no LICENSE"
    installed = Path(steer.__file__).resolve().parent
    assert (installed / "bench" / "demo.toml").is_file()
