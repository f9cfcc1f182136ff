"""Multilingual alignment: fine-tune a model with LoRA on a parallel corpus and save the merged "after" model.

The recipe (objective ``"translation"``, the default): for every paragraph index ``i`` of the corpus'
``stats`` split (never ``eval``) and every trained language ``T``, two supervised examples::

    Translate from Basque to English:\\n<text in T>\\nEnglish: <text in the pivot><eos>
    Translate from English to Basque:\\n<text in the pivot>\\nBasque: <text in T><eos>

The loss is the mean cross-entropy on the answer tokens only (the prompt and the padding carry no loss).
Objective ``"dpo"`` uses the same prompts with Direct Preference Optimisation (Rafailov et al. 2023):
the translation is preferred over an untranslated copy of the source (the answer in the wrong
language), and the reference model is the base model (the LoRA adapter switched off).

Training is LoRA (``peft``) on the linear projections, AdamW with a short linear warm-up and a linear
decay, gradient clipping at 1.0, and is deterministic on CPU: the example order is a seeded function
of the step, so an interrupted run resumes from ``out/checkpoint/`` and ends with exactly the weights
an uninterrupted run would have. At the end the adapter is merged into the weights and ``out/`` holds
a plain model folder (loadable by ``steer.load_model(out)``), the LoRA adapter in ``out/adapter/`` and
``out/align.json`` with everything needed to reproduce and check the run.

Modules: `config` (AlignConfig) · `data` (examples, prompt, encoding) · `objectives` (losses) ·
`training` (the loop, `align`) · `folder` (align.json, checkpoint/, the merged model).
"""

from steer.align.config import DEFAULT_TARGET_MODULES, OBJECTIVES, AlignConfig
from steer.align.data import PROMPT_TEMPLATE, Example, build_examples, translation_prompt
from steer.align.folder import read_align_info
from steer.align.training import align
from steer.languages import language_name

__all__ = [
    "AlignConfig",
    "DEFAULT_TARGET_MODULES",
    "Example",
    "OBJECTIVES",
    "PROMPT_TEMPLATE",
    "align",
    "build_examples",
    "language_name",
    "read_align_info",
    "translation_prompt",
]
