"""Where a result came from: the command that made it and the commit of the code that ran.

A result file the README quotes carries both (`provenance(command)`), so anyone can rerun it. The commit is
`git rev-parse HEAD` of the checkout steer was imported from, and only of that: an installed wheel (even one
inside some other git repository, e.g. a virtual environment under a checkout) has none (None).
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Sequence

PACKAGE = Path(__file__).resolve().parent


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def checkout_root(package: str | Path = PACKAGE) -> Path | None:
    """The git checkout `package` (a folder) sits at the top of, or None: its parent must be the work tree's root."""
    package = Path(package).resolve()
    top = _git(package, "rev-parse", "--show-toplevel")
    return package.parent if top and Path(top).resolve() == package.parent else None


def git_commit(package: str | Path = PACKAGE) -> str | None:
    """The full hash of HEAD of the checkout `package` belongs to (see `checkout_root`), else None."""
    root = checkout_root(package)
    return _git(root, "rev-parse", "HEAD") if root else None


def uncommitted_changes(package: str | Path = PACKAGE) -> bool | None:
    """Whether tracked files of that checkout differ from HEAD (None without a checkout)."""
    root = checkout_root(package)
    if root is None:
        return None
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    return None if status is None else bool(status)


def command_line(argv: Sequence[str] | None = None, *, program: str | None = None) -> str:
    """The command as typed, quoted for a shell: `program` (default: the script's name) and its arguments."""
    argv = list(sys.argv if argv is None else argv)
    head = program or ("python " + argv[0] if argv and argv[0].endswith(".py") else Path(argv[0]).name if argv else "")
    return " ".join([head, *map(shlex.quote, argv[1:])]).strip()


def provenance(command: str, package: str | Path = PACKAGE) -> dict:
    """{"command", "commit", "uncommitted_changes"} for a result file (spread it into the file's object)."""
    return {"command": command, "commit": git_commit(package), "uncommitted_changes": uncommitted_changes(package)}
