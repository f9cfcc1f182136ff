"""The output folder of `steer align` and what is read back from it.

``out/`` ends as a plain model folder (the merged weights and the tokenizer, loadable by
``steer.load_model(out)``), with the LoRA adapter in ``out/adapter/`` and ``out/align.json`` (everything
needed to reproduce and check the run). While training, ``out/checkpoint/`` holds the adapter, the
optimizer state and the torch RNG state (written as one unit), so a rerun resumes exactly.
A folder is only resumed or accepted as done when its identity (the settings that decide the
result, the base weights, the corpus) is the run's own.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from steer._io import atomic_dir, claim, prepare_out, remove_owned, steer_version, write_json_atomic
from steer.align.config import AlignConfig, resume_key
from steer.models import weights_hash

FORMAT = "steer.align"
CHECKPOINT_FORMAT = "steer.align.checkpoint"
FORMAT_VERSION = 1

Params = list[tuple[str, torch.nn.Parameter]]  # the trainable parameters, by name


def run_identity(config: AlignConfig, base_hash: str, corpus) -> dict[str, Any]:
    """What makes two runs the same run: stored in the checkpoint, compared on resume and rerun."""
    return {
        "config": config.resume_key(),
        "base_weights_hash": base_hash,
        "corpus_fingerprint": corpus.fingerprint(),
    }


def _differences(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    diffs = []
    stored_config = resume_key(stored.get("config", {}))
    for key in sorted(set(stored_config) | set(wanted["config"])):
        if stored_config.get(key) != wanted["config"].get(key):
            diffs.append(f"{key}: {stored_config.get(key)!r} there, {wanted['config'].get(key)!r} now")
    if stored.get("base_weights_hash") != wanted["base_weights_hash"]:
        diffs.append("another base model")
    if stored.get("corpus_fingerprint") != wanted["corpus_fingerprint"]:
        diffs.append("another corpus")
    return diffs


def _read_json(file: Path, remedy: str) -> dict[str, Any]:
    """A JSON object from `file`; a damaged one is a one-line error naming the file and what to do."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read '{file}' ({error}); the file is damaged: {remedy}") from None
    if not isinstance(data, dict):
        raise ValueError(f"'{file}' is not a JSON object; the file is damaged: {remedy}")
    return data


def read_align_info(path: str | Path) -> dict[str, Any]:
    """The ``align.json`` of a folder written by :func:`align` (ValueError if it is not one)."""
    file = Path(path) / "align.json"
    if not file.is_file():
        raise ValueError(f"{path} is not a folder written by steer align (no align.json)")
    info = _read_json(file, "rerun steer align into a new folder")
    if info.get("format") != FORMAT:
        raise ValueError(f"{file} is not a steer align file (format={info.get('format')!r})")
    if info.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{file} has format version {info['format_version']}; upgrade steer to read it")
    return info


def check_out(out: Path, identity: dict[str, Any]) -> str:
    """'done' (out already holds this very result), 'resume', or 'fresh'; ValueError when out holds something else."""
    if (out / "align.json").is_file():
        diffs = _differences(read_align_info(out), identity)
        if diffs:
            raise ValueError(
                f"{out} already holds an aligned model made with other settings ({'; '.join(diffs)}): "
                "choose another output folder or delete it"
            )
        return "done"
    state = out / "checkpoint" / "state.json"
    if state.is_file():
        stored = _read_json(state, f"delete {out / 'checkpoint'} to start over")
        diffs = _differences(stored, identity)
        if diffs:
            raise ValueError(
                f"{out / 'checkpoint'} was made with other settings ({'; '.join(diffs)}): rerun with the same "
                f"arguments to resume it, or delete {out / 'checkpoint'} to start over"
            )
        return "resume"
    return "fresh"


def check_out_folder(out: Path, inputs=()) -> Path:
    """The output rule (`steer._io.prepare_out`, verb align), before any work: `out` is new, empty, or a folder
    steer align made; it overlaps none of `inputs` (the base model's folder, the corpus)."""
    return prepare_out(out, "align", inputs=inputs, option="out")


def save_checkpoint(folder: Path, params: Params, optimizer, step: int, identity: dict, extra: dict) -> None:
    """The adapter, the optimizer state and the torch RNG state after `step`, written as one unit."""
    from safetensors.torch import save_file

    adapter = {name: p.detach().to("cpu").contiguous().clone() for name, p in params}
    opt_tensors: dict[str, torch.Tensor] = {"torch_rng_state": torch.get_rng_state().clone()}
    for name, p in params:
        for key, value in optimizer.state.get(p, {}).items():
            if torch.is_tensor(value):
                opt_tensors[f"{name}::{key}"] = value.detach().to("cpu").contiguous().clone()
    state = {"format": CHECKPOINT_FORMAT, "format_version": FORMAT_VERSION, "steer_version": steer_version(),
             "step": step, **identity, **extra}  # fmt: skip
    with atomic_dir(folder, "state.json") as tmp:
        tmp.mkdir()
        save_file(adapter, str(tmp / "adapter.safetensors"))
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "state.json").write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")


def load_checkpoint(folder: Path, params: Params, optimizer) -> dict[str, Any]:
    """Restore what `save_checkpoint` wrote into `params`, `optimizer` and the torch RNG; returns its state.json."""
    from safetensors.torch import load_file

    from safetensors import SafetensorError

    state = _read_json(folder / "state.json", f"delete {folder} to start over")
    tensors = {}
    for name in ("adapter", "optimizer"):
        file = folder / f"{name}.safetensors"
        try:
            tensors[name] = load_file(str(file))
        except (SafetensorError, OSError) as error:
            raise ValueError(f"cannot read '{file}' ({error}); the checkpoint is damaged: delete {folder} to start "
                             "over") from None
    adapter, opt_tensors = tensors["adapter"], tensors["optimizer"]
    names = [name for name, _ in params]
    if sorted(names) != sorted(adapter):
        raise ValueError(f"{folder} does not match this model's adapter; delete it to start over")
    with torch.no_grad():
        for name, p in params:
            p.copy_(adapter[name].to(p.device))
    opt_state = optimizer.state_dict()
    for i, name in enumerate(names):
        entries = {k.split("::", 1)[1]: v for k, v in opt_tensors.items() if k.startswith(name + "::")}
        if entries:
            opt_state["state"][i] = entries
    optimizer.load_state_dict(opt_state)
    torch.set_rng_state(opt_tensors["torch_rng_state"])
    return state


def _copy_license_files(source: str, target: Path) -> None:
    folder = Path(source)
    if folder.is_dir():
        for pattern in ("*TERMS*", "LICENSE*", "NOTICE*", "USE_POLICY*"):
            for file in folder.glob(pattern):
                if file.is_file():
                    shutil.copy(file, target / file.name)


def write_output(out: Path, peft_model, tokenizer, source: str, info: dict[str, Any]) -> None:
    """Write into `out` the adapter, the merged model, the tokenizer, the base's license files and, last,
    ``align.json`` (`info` plus the merged weights' hash); then remove the checkpoint.

    Everything is first written to ``out/.partial-output/`` and then moved in file by file, each only over a
    file steer wrote there (`steer._io.claim`): a file the user added to `out` is kept.
    """
    info = {"format": FORMAT, "format_version": FORMAT_VERSION, "steer_version": steer_version(), **info}
    staging = out / ".partial-output"
    claim(staging, folder=True)
    shutil.rmtree(staging, ignore_errors=True)  # what an interrupted earlier write left
    staging.mkdir()
    peft_model.save_pretrained(str(staging / "adapter"))
    merged = peft_model.merge_and_unload()
    info["weights_hash"] = weights_hash(merged)
    merged.save_pretrained(str(staging))
    tokenizer.save_pretrained(str(staging))
    _copy_license_files(source, staging)
    files = sorted(f.relative_to(staging) for f in staging.rglob("*") if f.is_file())
    for rel in files:  # every target checked before the first one moves
        claim(out / rel)
    for rel in files:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / rel, out / rel)
    write_json_atomic(out / "align.json", info)
    remove_owned(staging)
    remove_owned(out / "checkpoint")
