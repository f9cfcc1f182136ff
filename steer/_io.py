"""Small I/O helpers shared by every module that writes files: the cache root, atomic writes, file headers."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from steer._version import __version__


def cache_root() -> Path:
    """Where steer keeps converted models, downloaded packages and built corpora (`$STEER_HOME` or ~/.cache/steer)."""
    root = Path(os.environ.get("STEER_HOME") or Path.home() / ".cache" / "steer")
    root.mkdir(parents=True, exist_ok=True)
    return root


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary file path beside `path`; on success it is renamed onto `path`, on error removed.

    Refuses, before anything is written, when `path` is a folder: a file writer never deletes a folder.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"'{path}' is a folder; give a file path (steer never replaces a folder with a file)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp_dir / path.name
        os.replace(tmp_dir / path.name, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path, marker: str, *also_steers: str) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it replaces `path` in one rename.

    `marker` names the file that every folder of this kind holds (e.g. "corpus.json"): an existing
    folder at `path` is replaced only when it holds that file or one of `also_steers` (steer made
    it, e.g. an unfinished run's "checkpoint/state.json") or is empty. Any other folder, or a file,
    at `path` is refused before anything is written.
    """
    path = Path(path)
    check_replaceable_dir(path, marker, *also_steers)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    old = tmp_dir.with_name(tmp_dir.name[: -len(".tmp")] + ".old")
    try:
        yield tmp_dir / path.name
        if not (tmp_dir / path.name / marker).exists():
            raise RuntimeError(f"internal error: the folder written for '{path}' lacks its {marker}")
        check_replaceable_dir(path, marker, *also_steers)  # again: the work inside may have taken long
        if path.is_dir():
            os.replace(path, old)
        os.replace(tmp_dir / path.name, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def check_replaceable_dir(path: str | Path, *markers: str) -> None:
    """A clear error unless `path` is absent, an empty folder, or a folder steer made (it holds one of `markers`)."""
    path = Path(path)
    if path.is_file() or path.is_symlink():
        raise ValueError(f"'{path}' is a file; give a folder path")
    marker = markers[0]
    if path.is_dir() and not any((path / m).exists() for m in markers) and any(path.iterdir()):
        raise ValueError(
            f"'{path}' is a folder that steer did not write (it has no {marker}); pass a new or empty folder"
        )


def check_writable_dir(path: str | Path) -> Path:
    """Create `path` if needed and check that files can be written there, before any expensive work."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"'{path}' is a file; --out must be a folder (give a new or existing folder)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise ValueError(f"cannot write into '{path}' ({error.strerror or error}); choose a writable folder") from None
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def sha256_text(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()


def steer_version() -> str:
    """The installed steer version, written into every file steer makes."""
    return __version__


def file_header(model=None, **fields: Any) -> dict:
    """What a file steer writes records about where it comes from: the steer version, the model
    (name, weights hash, shape; `model` is a loaded model or an already described one, a dict) and
    any further `fields`, in that order. Spread it into the file's top-level object."""
    header: dict[str, Any] = {"steer_version": __version__}
    if model is not None:
        if isinstance(model, dict):
            header["model"] = dict(model)
        else:
            from steer.models import model_info  # steer.models uses this module: import at call time

            header["model"] = model_info(model).to_dict()
    header.update(fields)
    return header
