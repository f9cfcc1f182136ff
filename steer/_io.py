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


# ------------------------------------------------------------------ the output-folder rule
#
# A folder steer writes into (`--out`) is new, empty, or one steer made for the same verb: the marker file
# OUT_MARKER in it names the verb and lists every file steer wrote there. Inside it steer replaces only
# listed files (`atomic_file` enforces this for every write under a marked folder) and deletes only listed
# files (`remove_owned`); a file the user adds is never touched. An output never overlaps an input.

OUT_MARKER = ".steer-out.json"
OUT_FORMAT = "steer.out"


def prepare_out(out: str | Path | None, verb: str, *, inputs=(), option: str = "--out") -> Path:
    """The one output-folder rule, checked before any work; returns the folder.

    `out` must be a new path, an empty folder (dotfiles count) or a folder steer made for the same `verb`;
    a file, the empty string, a folder of the user's or of another verb, an unwritable place, and an output
    that is, contains or sits inside one of `inputs` (paths the run reads) are refused with one line.
    Nothing is created here: the folder and its marker appear with the first file steer writes into it, so
    a run that fails before writing leaves nothing behind.
    """
    path = _out_path(out, option)
    _check_no_overlap(path, inputs, option)
    if path.is_symlink() and not path.is_dir():
        raise ValueError(f"'{path}' is a link to no folder; {option} must be a folder (give a new or empty one)")
    if path.exists() and not path.is_dir():
        raise ValueError(f"'{path}' is a file; {option} must be a folder (give a new or empty one)")
    if path.is_dir():
        marker = read_out_marker(path)
        if marker is not None and marker["verb"] != verb:
            raise ValueError(f"'{path}' holds the output of `steer {marker['verb']}`; give a new or empty folder "
                             f"for `steer {verb}` ({option})")
        if marker is None:
            entries = sorted(entry.name for entry in path.iterdir())
            if entries:
                shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
                raise ValueError(f"'{path}' is a folder steer did not write (it holds {shown}); give a new or "
                                 f"empty folder ({option})")
    _check_writable(path, option)
    if read_out_marker(path) is None:
        _pending[path.absolute()] = verb
    return path


# Folders prepare_out accepted in this process that have no marker yet: it is written with their first file.
_pending: dict[Path, str] = {}


def _out_path(out, option: str) -> Path:
    if out is None or not str(out).strip():
        raise ValueError(f"{option} is empty (an unset shell variable?); give the folder to write into")
    return Path(str(out)).expanduser()


def _check_no_overlap(path: Path, inputs, option: str) -> None:
    """An output that is, contains or sits inside an input is refused (it could replace what it reads)."""
    mine = path.resolve()
    for given in inputs:
        if given is None or not str(given).strip():
            continue
        source = Path(str(given)).expanduser()
        if not source.exists():
            continue
        theirs = source.resolve()
        if mine == theirs or theirs in mine.parents or mine in theirs.parents:
            how = "is" if mine == theirs else "sits inside" if theirs in mine.parents else "contains"
            raise ValueError(f"{option} '{path}' {how} the input '{source}'; write the output somewhere else")


def _check_writable(path: Path, option: str) -> None:
    """Whether files can be made at `path` (a folder, or a folder to create): tried in the nearest existing
    folder, without creating `path`."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"cannot write into '{path}': '{existing}' is a file, not a folder ({option})")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise ValueError(f"cannot write into '{path}' ({error.strerror or error}); choose a writable folder "
                         f"({option})") from None


def read_out_marker(folder: str | Path) -> dict | None:
    """The marker of a folder steer made (None when there is none); a damaged marker is a clear error."""
    file = Path(folder) / OUT_MARKER
    if not file.is_file():
        return None
    try:
        marker = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        marker = None
    if not (isinstance(marker, dict) and marker.get("format") == OUT_FORMAT and isinstance(marker.get("verb"), str)
            and isinstance(marker.get("files"), list)):
        raise ValueError(f"'{file}' is damaged (steer's list of the files it wrote there); give a new folder")
    return marker


def _write_marker(folder: Path, marker: dict) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f"{OUT_MARKER}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(marker, handle, indent=2, ensure_ascii=False)
            handle.write("\n")
        os.replace(tmp, folder / OUT_MARKER)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _owner(path: Path, *, create: bool = False) -> tuple[Path, dict] | None:
    """The nearest folder above `path` that steer marked as an output, with its marker (None: none). With
    `create`, a folder prepare_out accepted but that has no marker yet is created and marked on the way."""
    for folder in path.absolute().parents:
        marker = read_out_marker(folder)
        if marker is not None:
            return folder, marker
        if create and folder in _pending:
            verb = _pending.pop(folder)
            folder.mkdir(parents=True, exist_ok=True)
            with _locked(folder):  # another process (a torchrun rank) may be marking it at the same moment
                marker = read_out_marker(folder)
                if marker is None:
                    marker = {"format": OUT_FORMAT, "verb": verb, "steer_version": __version__, "files": []}
                    _write_marker(folder, marker)
            return folder, marker
    return None


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on `folder` while its marker is read and rewritten (torchrun ranks write their
    checkpoints into one folder at once; without the lock one rank's listing could be lost)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no other process shares the folder in practice
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _owned(rel: str, files: list[str]) -> bool:
    return rel in files or any(entry.endswith("/") and rel.startswith(entry) for entry in files)


def claim(path: str | Path, *, folder: bool = False) -> None:
    """Before steer writes `path`: inside a marked output folder, a path that exists must be one steer wrote
    (listed in the marker), and a new one is listed first. Outside any marked folder nothing is checked."""
    path = Path(path)
    owner = _owner(path, create=True)
    if owner is None:
        return
    root, marker = owner
    rel = path.absolute().relative_to(root).as_posix() + ("/" if folder else "")
    if _owned(rel, marker["files"]):
        return
    with _locked(root):
        marker = read_out_marker(root)  # again, under the lock: another process may have listed files since
        if _owned(rel, marker["files"]):
            return
        if path.exists() or path.is_symlink():
            raise ValueError(f"'{path}' is in steer's output folder '{root}' but steer did not write it; move it "
                             "away (steer replaces only its own files)")
        marker["files"] = sorted({*marker["files"], rel})
        _write_marker(root, marker)


def remove_owned(path: str | Path) -> None:
    """Delete what steer wrote at `path` (a file, or the files under a folder) and nothing else: inside a marked
    output folder only listed files go, and a folder only once nothing is left in it."""
    path = Path(path)
    owner = _owner(path)
    if owner is None:
        return  # no marked folder above: steer wrote nothing there, so there is nothing of steer's to delete
    root, _ = owner
    target = path.absolute()
    with _locked(root):
        marker = read_out_marker(root)
        doomed = [f for f in (root / rel.rstrip("/") for rel in marker["files"]) if f == target or target in f.parents]
        if not doomed:
            return
        for file in doomed:
            if file.is_dir() and not file.is_symlink():
                shutil.rmtree(file)
            elif file.exists() or file.is_symlink():
                file.unlink()
        marker["files"] = [rel for rel in marker["files"] if root / rel.rstrip("/") not in doomed]
        _write_marker(root, marker)
    for folder in [target, *target.parents]:
        if folder == root or root not in folder.parents:
            break
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary file path beside `path`; on success it is renamed onto `path`, on error removed.

    Refuses, before anything is written, when `path` is a folder (a file writer never deletes a folder),
    and inside a folder steer made, when `path` is a file steer did not write there (`claim`).
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"'{path}' is a folder; give a file path (steer never replaces a folder with a file)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ValueError(f"cannot write '{path}': a file stands where its folder should be") from None
    claim(path)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp_dir / path.name
        os.replace(tmp_dir / path.name, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path, marker: str, *also_steers: str) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it replaces `path` in one rename.

    For steer's own folders (caches, a run's checkpoint folder). `marker` names the file that every folder
    of this kind holds (e.g. "config.json"): an existing folder at `path` is replaced only when it holds
    that file or one of `also_steers` or is empty; inside a marked output folder it must also be one steer
    listed (`claim`). Any other folder, or a file, at `path` is refused before anything is written.
    """
    path = Path(path)
    check_replaceable_dir(path, marker, *also_steers)
    path.parent.mkdir(parents=True, exist_ok=True)
    claim(path, folder=True)
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


def check_out_file(path: str | Path | None, is_steers, *, what: str, inputs=(), option: str = "--out") -> Path:
    """The output rule for a single file: a new path, or a file steer wrote of this kind (`is_steers(path)`);
    never a folder, the empty string, a place under a file or unwritable, or one of `inputs` or inside one."""
    path = _out_path(path, option)
    _check_no_overlap(path, inputs, option)
    if path.is_dir():
        raise ValueError(f"'{path}' is a folder; give a file path for the {what}")
    if path.exists() and not is_steers(path):
        raise ValueError(f"'{path}' exists and is not a {what} steer wrote; give a new file name ({option})")
    parent = path.parent
    for folder in [parent, *parent.parents]:
        if folder.exists():
            if not folder.is_dir():
                raise ValueError(f"cannot write '{path}': '{folder}' is a file, not a folder ({option})")
            break
    _check_writable(parent, option)
    return path


def read_safetensors(path: str | Path, remedy: str) -> tuple[dict[str, str], dict[str, Any]]:
    """(header metadata, tensors) of a safetensors file; a missing, damaged or truncated one is a one-line error
    naming the file and ending with `remedy` (what to do)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return handle.metadata() or {}, {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError) as error:
        raise ValueError(f"cannot read '{path}' ({error}); the file is damaged or truncated: {remedy}") from None


def is_steer_json(path: str | Path) -> bool:
    """Whether `path` is a JSON object steer wrote (it records the steer version)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and "steer_version" in data


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
