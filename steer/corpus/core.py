"""Per-language text for statistics and evaluation, with a held-out split that is parallel.

:class:`Corpus` holds the texts, saves and loads them (a folder of ``corpus.json`` plus one
``<lang>.jsonl`` per language, checked against a fingerprint) and takes subsets;
:func:`load_corpus` finds a corpus by name or path.  The embedded default is the LibreOffice help
(:mod:`steer.corpus.libreoffice`); other sources are a folder of ``<lang>.txt`` files
(:meth:`Corpus.from_text_dir`), one JSONL file (:meth:`Corpus.from_jsonl`) or a Hugging Face dataset
such as FLORES-200 (:meth:`Corpus.from_hf`), all in :mod:`steer.corpus.sources`.

Splits are deterministic: a paragraph goes to ``eval`` or ``stats`` by the SHA-1 of its key, never
by its position, so adding a language or re-running never moves a paragraph between splits.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from steer._io import atomic_file, prepare_out, sha256_text, steer_version, write_json_atomic
from steer.languages import DEFAULT_LANGUAGES, normalise_codes

__all__ = ["Corpus", "eval_keys", "key_hash", "load_corpus", "n_eval_for"]

_FORMAT = "steer.corpus"
_FORMAT_VERSION = 1


def key_hash(key: str) -> int:
    """The split hash of a key: the first 8 bytes of its SHA-1, as an integer."""
    return int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big")


def eval_keys(keys: Iterable[str], n_eval: int) -> set[str]:
    """The `n_eval` keys with the smallest SHA-1: a split that does not depend on order or on the other keys' count."""
    return set(sorted(keys, key=lambda k: (key_hash(k), k))[: max(0, n_eval)])


def n_eval_for(n: int, eval_fraction: float) -> int:
    """How many of `n` texts go to eval: `eval_fraction` of them, at least one and never all (none if n < 2)."""
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    if n < 2 or eval_fraction == 0.0:
        return 0
    return min(n - 1, max(1, round(n * eval_fraction)))


# --------------------------------------------------------------------------------------------
# The Corpus object
# --------------------------------------------------------------------------------------------


@dataclass
class Corpus:
    """Texts per language in two splits.

    ``stats`` feeds activation statistics; ``eval`` is held out.  When ``parallel`` is true,
    ``eval[lang][i]`` is the same paragraph in every language (and so is ``stats[lang][i]``),
    and ``ids[split][i]`` names it.
    """

    languages: list[str]
    stats: dict[str, list[str]]
    eval: dict[str, list[str]]
    ids: dict[str, list[str]] = field(default_factory=dict)
    source: str = ""
    parallel: bool = False

    def __post_init__(self) -> None:
        given = list(self.languages)
        if not given:
            raise ValueError("a corpus needs at least one language")
        self.languages = normalise_codes(given, what="corpus languages")  # also: each language once
        if self.languages != given:  # the texts follow their language's normalised code
            rename = dict(zip(given, self.languages))
            self.stats = {rename.get(lang, lang): texts for lang, texts in self.stats.items()}
            self.eval = {rename.get(lang, lang): texts for lang, texts in self.eval.items()}
        for split_name, split in (("stats", self.stats), ("eval", self.eval)):
            missing = [lang for lang in self.languages if lang not in split]
            if missing:
                raise ValueError(f"corpus {split_name} split has no entry for {missing}")
        empty = [lang for lang in self.languages if not self.stats[lang] and not self.eval[lang]]
        if empty:
            raise ValueError(
                f"no text for language(s) {empty}: add text for them or drop them from the language list"
            )
        if self.parallel:
            for split_name, split in (("stats", self.stats), ("eval", self.eval)):
                lengths = {lang: len(split[lang]) for lang in self.languages}
                if len(set(lengths.values())) > 1:
                    raise ValueError(f"parallel corpus has unequal {split_name} lengths {lengths}")
                if split_name in self.ids and len(self.ids[split_name]) != lengths[self.languages[0]]:
                    raise ValueError(f"parallel corpus has {len(self.ids[split_name])} {split_name} ids for "
                                     f"{lengths[self.languages[0]]} texts")  # fmt: skip
        else:
            self.ids = {}

    # -- basic views ---------------------------------------------------------------------------

    def __repr__(self) -> str:
        counts = ", ".join(f"{lang}:{len(self.stats[lang])}+{len(self.eval[lang])}" for lang in self.languages)
        return f"Corpus({self.source!r}, parallel={self.parallel}, stats+eval per language: {counts})"

    def counts(self) -> dict[str, dict[str, int]]:
        return {lang: {"stats": len(self.stats[lang]), "eval": len(self.eval[lang])} for lang in self.languages}

    def fingerprint(self) -> str:
        """SHA-256 (hex) over the languages and every text in order; the same corpus always gives the same value."""
        parts: list[str] = ["steer.corpus.v1", *self.languages]
        for lang in self.languages:
            for split_name, split in (("stats", self.stats), ("eval", self.eval)):
                parts.append(f"{lang}/{split_name}/{len(split[lang])}")
                parts.extend(split[lang])
        return sha256_text(*parts)

    def subset(
        self,
        languages: Iterable[str] | None = None,
        max_stats: int | None = None,
        max_eval: int | None = None,
    ) -> Corpus:
        """The first `max_stats` / `max_eval` texts of each (selected) language; parallel stays parallel."""
        langs = list(self.languages) if languages is None else normalise_codes(languages, what="languages")
        unknown = [lang for lang in langs if lang not in self.languages]
        if unknown:
            raise ValueError(f"language(s) {unknown} not in this corpus; it has {self.languages}")
        s = slice(None) if max_stats is None else slice(0, max(0, max_stats))
        e = slice(None) if max_eval is None else slice(0, max(0, max_eval))
        ids = {}
        if self.parallel:
            ids = {name: list(v[s if name == "stats" else e]) for name, v in self.ids.items()}
        return Corpus(
            languages=langs,
            stats={lang: list(self.stats[lang][s]) for lang in langs},
            eval={lang: list(self.eval[lang][e]) for lang in langs},
            ids=ids,
            source=self.source,
            parallel=self.parallel,
        )

    # -- persistence -----------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write a folder: one ``<lang>.jsonl`` per language, then ``corpus.json`` (metadata, fingerprint).

        The folder follows the output rule (`steer._io.prepare_out`: new, empty, or a corpus folder steer
        made); each file is written atomically and a file the user added is kept. ``corpus.json`` goes
        last and carries the fingerprint, so a folder caught half-rewritten is refused on load.
        """
        path = prepare_out(path, "corpus build")  # before any work
        meta = {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "languages": self.languages,
            "source": self.source,
            "parallel": self.parallel,
            "fingerprint": self.fingerprint(),
            "steer_version": steer_version(),
            "counts": self.counts(),
            "ids": self.ids,
        }
        for lang in self.languages:
            lines = []
            for split_name, split in (("stats", self.stats), ("eval", self.eval)):
                ids = self.ids.get(split_name)
                for i, text in enumerate(split[lang]):
                    rid = ids[i] if ids else f"{split_name}:{i}"
                    lines.append(json.dumps({"id": rid, "split": split_name, "text": text}, ensure_ascii=False) + "\n")
            with atomic_file(path / f"{lang}.jsonl") as tmp:
                tmp.write_text("".join(lines), encoding="utf-8")
        write_json_atomic(path / "corpus.json", meta)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Corpus:
        """Read a folder written by :meth:`save`; a missing file or a fingerprint mismatch is a ValueError."""
        path = Path(path)
        meta_path = path / "corpus.json"
        if not meta_path.is_file():
            raise ValueError(f"{path} is not a steer corpus folder (no corpus.json)")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{meta_path} is not valid JSON ({e})") from None
        if meta.get("format") != _FORMAT:
            raise ValueError(f"{meta_path} is not a steer corpus file (format={meta.get('format')!r})")
        if meta.get("format_version", 0) > _FORMAT_VERSION:
            raise ValueError(f"{meta_path} has format version {meta['format_version']}; upgrade steer to read it")
        try:  # checked before any file name is built from them
            languages = normalise_codes(meta["languages"], what=f"{meta_path}: languages")
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"corpus at {path} is damaged ({error}); rebuild the corpus") from None
        stats: dict[str, list[str]] = {}
        evals: dict[str, list[str]] = {}
        for lang in languages:
            f = path / f"{lang}.jsonl"
            if not f.is_file():
                raise ValueError(f"corpus folder {path} is missing {f.name} (listed in corpus.json); rebuild the corpus")
            stats[lang], evals[lang] = [], []
            with open(f, encoding="utf-8") as fh:
                for n, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        rec = json.loads(line)
                        (stats if rec["split"] == "stats" else evals)[lang].append(rec["text"])
                    except (json.JSONDecodeError, KeyError, TypeError):
                        raise ValueError(f"{f}:{n} is not a corpus record; rebuild the corpus") from None
        try:
            corpus = cls(
                languages=languages,
                stats=stats,
                eval=evals,
                ids={k: list(v) for k, v in (meta.get("ids") or {}).items()},
                source=meta.get("source", ""),
                parallel=bool(meta.get("parallel")),
            )
        except ValueError as e:
            raise ValueError(f"corpus at {path} is damaged ({e}); rebuild the corpus") from None
        if corpus.fingerprint() != meta.get("fingerprint"):
            raise ValueError(
                f"corpus at {path} does not match its fingerprint (files changed or truncated); rebuild the corpus"
            )
        return corpus

    # -- other sources (steer.corpus.sources) ------------------------------------------------------

    @classmethod
    def from_text_dir(cls, path: str | Path, eval_fraction: float = 0.1, languages: Iterable[str] | None = None) -> Corpus:
        """A folder of ``<lang>.txt`` files, one text per non-empty line: :func:`steer.corpus.sources.from_text_dir`."""
        from steer.corpus.sources import from_text_dir

        return from_text_dir(path, eval_fraction, languages)

    @classmethod
    def from_jsonl(cls, path: str | Path, eval_fraction: float = 0.1, languages: Iterable[str] | None = None) -> Corpus:
        """One JSONL file of ``{"lang", "text"}`` records: :func:`steer.corpus.sources.from_jsonl`."""
        from steer.corpus.sources import from_jsonl

        return from_jsonl(path, eval_fraction, languages)

    @classmethod
    def from_hf(
        cls,
        name: str,
        languages: Iterable[str],
        config_for: Callable[[str], str] | Mapping[str, str] | None = None,
        split: str = "devtest",
        text_field: str = "sentence",
        *,
        eval_split: str | None = None,
        eval_fraction: float = 0.1,
        **load_kwargs,
    ) -> Corpus:
        """One Hugging Face dataset config per language (e.g. FLORES-200): :func:`steer.corpus.sources.from_hf`."""
        from steer.corpus.sources import from_hf

        return from_hf(name, languages, config_for, split, text_field, eval_split=eval_split,
                       eval_fraction=eval_fraction, **load_kwargs)  # fmt: skip


def load_corpus(path_or_name: str | Path | None = None, *, progress: bool = True) -> Corpus:
    """Load a corpus by name or path.

    - ``None`` / ``"libreoffice"``: the cached default LibreOffice corpus (:data:`DEFAULT_LANGUAGES`),
      built on first use; ``"libreoffice:en,de,om"`` picks the languages.
    - a folder with ``corpus.json``: :meth:`Corpus.load`
    - a folder of ``<lang>.txt``: :meth:`Corpus.from_text_dir`
    - a ``.jsonl`` file: :meth:`Corpus.from_jsonl`
    """
    from steer.corpus.libreoffice import build_libreoffice, default_corpus_dir, validate_languages

    name = "libreoffice" if path_or_name is None else str(path_or_name)
    if name == "libreoffice" or name.startswith("libreoffice:"):
        langs = validate_languages(name.split(":", 1)[1]) if ":" in name else list(DEFAULT_LANGUAGES)
        where = default_corpus_dir(langs, 40, 200)
        if (where / "corpus.json").is_file():
            try:
                return Corpus.load(where)
            except ValueError:
                pass  # damaged cache: rebuilt below
        if where.exists():  # steer's own cache folder (no user file lives there): start it afresh
            shutil.rmtree(where)
        return build_libreoffice(langs, out=where, progress=progress)
    path = Path(name).expanduser()
    if path.is_dir():
        if (path / "corpus.json").is_file():
            return Corpus.load(path)
        if any(path.glob("*.txt")):
            return Corpus.from_text_dir(path)
        raise ValueError(f"{path} holds neither corpus.json nor <lang>.txt files")
    if path.is_file() and path.suffix == ".jsonl":
        return Corpus.from_jsonl(path)
    raise ValueError(
        f"cannot load a corpus from {name!r}: give 'libreoffice', a corpus folder, a folder of <lang>.txt or a .jsonl file"
    )
