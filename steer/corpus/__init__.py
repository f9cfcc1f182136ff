"""Per-language text for statistics and evaluation, with a held-out split that is parallel.

- :mod:`steer.corpus.core`: :class:`Corpus` (splits, fingerprint, save/load, subsets) and :func:`load_corpus`;
- :mod:`steer.corpus.sources`: your own text (a folder of ``<lang>.txt``, JSONL, Hugging Face datasets);
- :mod:`steer.corpus.libreoffice`: the embedded default, the LibreOffice help from Debian's packages
  (:func:`build_libreoffice`), parsed and aligned by :mod:`steer.corpus.helptext`.

Language codes are those of :mod:`steer.languages`.
"""

from steer.corpus.core import Corpus, load_corpus
from steer.corpus.helptext import align_help_trees, align_paragraphs, parse_help_tree
from steer.corpus.libreoffice import build_libreoffice
from steer.corpus.sources import FLORES_CODES
from steer.languages import DEFAULT_LANGUAGES, LIBREOFFICE_LANGUAGES, LOW_RESOURCE

__all__ = [
    "DEFAULT_LANGUAGES",
    "LOW_RESOURCE",
    "LIBREOFFICE_LANGUAGES",
    "FLORES_CODES",
    "Corpus",
    "align_help_trees",
    "align_paragraphs",
    "build_libreoffice",
    "load_corpus",
    "parse_help_tree",
]
