"""Where a result came from: the command as typed, and the commit only of a checkout steer sits at the top of."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import steer
from steer.provenance import checkout_root, command_line, git_commit, provenance, uncommitted_changes


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture()
def repo(tmp_path):
    try:
        _git(tmp_path, "init", "-q")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git is not available")
    for folder in ("pkg", "venv/site-packages/pkg"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "__init__.py").write_text("")
    _git(tmp_path, "add", "pkg")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    return tmp_path


def test_the_commit_of_a_package_at_the_top_of_a_checkout_only(repo, tmp_path_factory):
    head = _git(repo, "rev-parse", "HEAD")
    assert len(head) == 40
    assert checkout_root(repo / "pkg") == repo.resolve() and git_commit(repo / "pkg") == head
    assert uncommitted_changes(repo / "pkg") is False
    (repo / "pkg" / "__init__.py").write_text("x = 1\n")
    assert uncommitted_changes(repo / "pkg") is True
    # an installed copy inside some other checkout (a virtual environment under it) has no commit
    assert git_commit(repo / "venv" / "site-packages" / "pkg") is None
    assert uncommitted_changes(repo / "venv" / "site-packages" / "pkg") is None
    outside = tmp_path_factory.mktemp("plain") / "pkg"
    outside.mkdir()
    assert git_commit(outside) is None
    assert provenance("python x.py", repo / "pkg") == {"command": "python x.py", "commit": head,
                                                       "uncommitted_changes": True}


def test_steer_itself():
    package = Path(steer.__file__).resolve().parent
    commit = git_commit()
    if checkout_root(package) is None:
        assert commit is None  # an installed wheel
    else:
        assert commit == _git(package.parent, "rev-parse", "HEAD")


def test_command_line_quotes_for_a_shell():
    assert command_line(["benchmarks/speed.py", "--json", "docs/results/speed.json"]) == \
        "python benchmarks/speed.py --json docs/results/speed.json"
    assert command_line(["/venv/bin/steer", "demo", "--out", "a b"]) == "steer demo --out 'a b'"
    assert command_line(["x", "bench", "c.toml"], program="steer") == "steer bench c.toml"
