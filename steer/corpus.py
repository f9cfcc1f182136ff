"""Per-language text for statistics and evaluation, with a held-out split that is parallel.

The embedded default is the LibreOffice help (MPL-2.0), which Debian ships translated as
``libreoffice-help-<code>`` packages.  Every help page is HTML whose paragraphs carry stable
ids (``<p id="par_id…">``); the same (page, par_id) in two languages is the same paragraph, so
the packages give a paragraph-aligned parallel corpus without any sentence alignment.

Other sources: a folder of ``<lang>.txt`` files (:meth:`Corpus.from_text_dir`), one JSONL file
(:meth:`Corpus.from_jsonl`) or a Hugging Face dataset such as FLORES-200 (:meth:`Corpus.from_hf`).

Splits are deterministic: a paragraph goes to ``eval`` or ``stats`` by the SHA-1 of its key, never
by its position, so adding a language or re-running never moves a paragraph between splits.
"""

from __future__ import annotations

import hashlib
import html
import json
import shutil
import subprocess
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from steer._io import atomic_dir, cache_root, check_replaceable_dir, sha256_text, steer_version, write_json_atomic
from steer.languages import DEFAULT_LANGUAGES, LANGUAGES, LIBREOFFICE_LANGUAGES, LOW_RESOURCE

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

# FLORES-200 configuration names for from_hf(); extend by passing config_for.
FLORES_CODES = {code: lang.flores for code, lang in LANGUAGES.items() if lang.flores}

_FORMAT = "steer.corpus"
_FORMAT_VERSION = 1
_PARSER_VERSION = 1  # bump when parse_help_tree changes, so cached parses are redone
_MIN_PARALLEL = 1000

_BRING_YOUR_OWN = (
    "or bring your own corpus with `steer corpus build --from-dir DIR` (a folder of <lang>.txt) or --jsonl FILE"
)


def _key_hash(key: str) -> int:
    return int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big")


def _eval_keys(keys: Iterable[str], n_eval: int) -> set[str]:
    """The `n_eval` keys with the smallest SHA-1: a split that does not depend on order or on the other keys' count."""
    return set(sorted(keys, key=lambda k: (_key_hash(k), k))[: max(0, n_eval)])


def _n_eval_for(n: int, eval_fraction: float) -> int:
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
        self.languages = list(self.languages)
        if not self.languages:
            raise ValueError("a corpus needs at least one language")
        if len(set(self.languages)) != len(self.languages):
            raise ValueError(f"duplicate languages in {self.languages}")
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
        langs = list(self.languages if languages is None else languages)
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
        """Write a folder: ``corpus.json`` (metadata) and one ``<lang>.jsonl`` per language, atomically."""
        path = Path(path)
        check_replaceable_dir(path, "corpus.json")  # before any work
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
        with atomic_dir(path, "corpus.json") as tmp:
            tmp.mkdir()
            for lang in self.languages:
                with open(tmp / f"{lang}.jsonl", "w", encoding="utf-8") as f:
                    for split_name, split in (("stats", self.stats), ("eval", self.eval)):
                        ids = self.ids.get(split_name)
                        for i, text in enumerate(split[lang]):
                            rid = ids[i] if ids else f"{split_name}:{i}"
                            rec = {"id": rid, "split": split_name, "text": text}
                            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            # corpus.json last: a folder with corpus.json is complete (the rename makes it all-or-nothing anyway)
            (tmp / "corpus.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
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
        languages = list(meta["languages"])
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

    # -- other sources -----------------------------------------------------------------------------

    @classmethod
    def from_text_dir(cls, path: str | Path, eval_fraction: float = 0.1, languages: Iterable[str] | None = None) -> Corpus:
        """A folder of ``<lang>.txt`` files, one text per non-empty line (blank lines are skipped).

        If every file has the same number of texts, line i is taken to be the same text in every
        language and the corpus is parallel (the eval lines are the same in every file).  The eval
        split is ``eval_fraction`` of the texts, chosen by hash (of the line number when parallel,
        of the text otherwise).
        """
        path = Path(path)
        if not path.is_dir():
            raise ValueError(f"{path} is not a folder of <lang>.txt files")
        files = {p.stem: p for p in sorted(path.glob("*.txt"))}
        if languages is not None:
            langs = list(languages)
            missing = [lang for lang in langs if lang not in files]
            if missing:
                raise ValueError(f"{path} has no {', '.join(m + '.txt' for m in missing)}")
            files = {lang: files[lang] for lang in langs}
        if not files:
            raise ValueError(f"{path} has no <lang>.txt files; write one file per language, one text per line")
        texts = {}
        for lang, p in files.items():
            lines = [" ".join(line.split()) for line in p.read_text(encoding="utf-8").splitlines()]
            texts[lang] = [line for line in lines if line]
        return cls._from_lists(texts, eval_fraction, source=f"textdir:{path.resolve()}")

    @classmethod
    def _from_lists(cls, texts: dict[str, list[str]], eval_fraction: float, source: str) -> Corpus:
        empty = [lang for lang, t in texts.items() if not t]
        if empty:
            raise ValueError(f"no text for language(s) {empty} in {source}; add text or drop the language")
        lengths = {len(t) for t in texts.values()}
        parallel = len(texts) > 1 and len(lengths) == 1
        stats: dict[str, list[str]] = {}
        evals: dict[str, list[str]] = {}
        ids: dict[str, list[str]] = {}
        if parallel:
            n = lengths.pop()
            keys = [str(i) for i in range(n)]
            ev = _eval_keys(keys, _n_eval_for(n, eval_fraction))
            ids = {"stats": [k for k in keys if k not in ev], "eval": [k for k in keys if k in ev]}
            for lang, t in texts.items():
                stats[lang] = [t[int(k)] for k in ids["stats"]]
                evals[lang] = [t[int(k)] for k in ids["eval"]]
        else:
            for lang, t in texts.items():
                keys = [f"{i}:{s}" for i, s in enumerate(t)]
                ev = _eval_keys(keys, _n_eval_for(len(t), eval_fraction))
                stats[lang] = [s for k, s in zip(keys, t) if k not in ev]
                evals[lang] = [s for k, s in zip(keys, t) if k in ev]
        return cls(languages=list(texts), stats=stats, eval=evals, ids=ids, source=source, parallel=parallel)

    @classmethod
    def from_jsonl(cls, path: str | Path, eval_fraction: float = 0.1, languages: Iterable[str] | None = None) -> Corpus:
        """One JSONL file of ``{"lang", "text"}`` records, optionally with ``"split"`` ("stats"/"eval") and ``"id"``.

        Records without a split are assigned by hash (of the id if there is one, else of the text).
        The corpus is parallel when every record has an id and each split holds the same ids in
        every language; texts are then ordered by the first language's order of ids.
        """
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{path} is not a file")
        records: list[dict] = []
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    lang, text = rec["lang"], rec["text"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise ValueError(f'{path}:{n}: expected a JSON object with "lang" and "text"') from None
                split = rec.get("split")
                if split not in (None, "stats", "eval"):
                    raise ValueError(f'{path}:{n}: split must be "stats" or "eval", got {split!r}')
                text = " ".join(str(text).split())
                if text:
                    records.append({"lang": str(lang), "text": text, "split": split, "id": rec.get("id")})
        if not records:
            raise ValueError(f"{path} holds no texts; write one JSON object per line with lang and text")
        langs = list(dict.fromkeys(r["lang"] for r in records))
        if languages is not None:
            want = list(languages)
            missing = [lang for lang in want if lang not in langs]
            if missing:
                raise ValueError(f"{path} has no text for {missing}; it has {langs}")
            langs = want
            records = [r for r in records if r["lang"] in set(want)]
        has_ids = all(r["id"] is not None for r in records)
        # assign missing splits by hash: of the id (same in every language) or of the text
        n_per_lang = {lang: sum(r["lang"] == lang for r in records) for lang in langs}
        unsplit: dict[str, list[dict]] = {}
        for r in records:
            r["id"] = None if r["id"] is None else str(r["id"])
            if r["split"] is None:
                unsplit.setdefault(r["lang"] if not has_ids else "*", []).append(r)
        for group, recs in unsplit.items():
            keys = {r["id"] if has_ids else f"{r['lang']}:{r['text']}" for r in recs}
            n = len(keys) if has_ids else n_per_lang[group]
            ev = _eval_keys(keys, _n_eval_for(n, eval_fraction))
            for r in recs:
                r["split"] = "eval" if (r["id"] if has_ids else f"{r['lang']}:{r['text']}") in ev else "stats"
        by = {(lang, s): [r for r in records if r["lang"] == lang and r["split"] == s] for lang in langs for s in ("stats", "eval")}  # fmt: skip
        parallel = has_ids and len(langs) > 1
        ids: dict[str, list[str]] = {}
        if parallel:
            for s in ("stats", "eval"):
                order = [r["id"] for r in by[(langs[0], s)]]
                if len(set(order)) != len(order) or any(
                    sorted(r["id"] for r in by[(lang, s)]) != sorted(order) for lang in langs[1:]
                ):
                    parallel = False
                    break
                ids[s] = order
        if parallel:
            for lang in langs:
                for s in ("stats", "eval"):
                    pos = {r["id"]: r for r in by[(lang, s)]}
                    by[(lang, s)] = [pos[i] for i in ids[s]]
        return cls(
            languages=langs,
            stats={lang: [r["text"] for r in by[(lang, "stats")]] for lang in langs},
            eval={lang: [r["text"] for r in by[(lang, "eval")]] for lang in langs},
            ids=ids if parallel else {},
            source=f"jsonl:{path.resolve()}",
            parallel=parallel,
        )

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
        """Load one dataset configuration per language from the Hugging Face hub (e.g. FLORES-200).

        ``config_for`` maps a steer code to the dataset's configuration name (a dict or a callable);
        by default :data:`FLORES_CODES` for a name containing "flores", else the code itself.
        With ``eval_split`` the eval texts come from that split and ``split`` feeds stats; without
        it, ``split`` is divided by hash (``eval_fraction``).  Equal row counts in every language are
        taken as row-aligned (true for FLORES), giving a parallel corpus.
        """
        try:
            import datasets
        except ImportError:
            raise RuntimeError("from_hf needs the `datasets` package: pip install datasets") from None
        langs = list(languages)
        if not langs:
            raise ValueError("from_hf needs at least one language")
        if config_for is None:
            config_for = FLORES_CODES if "flores" in name.lower() else {lang: lang for lang in langs}
        get = config_for.get if isinstance(config_for, Mapping) else config_for

        def rows(lang: str, which: str) -> list[str]:
            config = get(lang)
            if config is None:
                raise ValueError(f"no {name} configuration known for {lang!r}; pass config_for={{{lang!r}: '<config>'}}")
            try:
                ds = datasets.load_dataset(name, config, split=which, **load_kwargs)
            except Exception as e:  # hub unreachable, gated, unknown config: one clear line
                first = str(e).strip().splitlines()[0] if str(e).strip() else ""
                raise RuntimeError(
                    f"could not load {name} ({config}, split {which}) from the Hugging Face hub: "
                    f"{type(e).__name__}: {first[:300]} -- check the network / HF token, {_BRING_YOUR_OWN}"
                ) from None
            if text_field not in ds.column_names:
                raise ValueError(f"{name} ({config}) has no field {text_field!r}; it has {ds.column_names}")
            return [" ".join(str(t).split()) for t in ds[text_field]]

        source = f"hf:{name}"
        if eval_split is None:
            texts = {lang: rows(lang, split) for lang in langs}
            return cls._from_lists(texts, eval_fraction, source=source)
        stats = {lang: rows(lang, split) for lang in langs}
        evals = {lang: rows(lang, eval_split) for lang in langs}
        parallel = len({len(v) for v in stats.values()}) == 1 and len({len(v) for v in evals.values()}) == 1
        ids = {}
        if parallel:
            ids = {"stats": [f"{split}:{i}" for i in range(len(stats[langs[0]]))],
                   "eval": [f"{eval_split}:{i}" for i in range(len(evals[langs[0]]))]}  # fmt: skip
        return cls(languages=langs, stats=stats, eval=evals, ids=ids, source=source, parallel=parallel)


# --------------------------------------------------------------------------------------------
# LibreOffice help: parsing an extracted help tree
# --------------------------------------------------------------------------------------------

_BLOCK_END = {"p", "div", "td", "th", "li", "ul", "ol", "table", "tr", "body", "html", "h1", "h2", "h3", "h4", "h5", "h6"}  # fmt: skip
_VOID = {"br", "img", "input", "meta", "link", "hr", "wbr", "col", "area", "base", "embed", "source"}


class _ParagraphParser(HTMLParser):
    """Collects the text of every ``<p id="par_id…">``.

    Platform variants (``<span class="MAC">`` / default) are inline alternatives; we keep the
    default and drop the macOS one, so "Command Ctrl + F" reads "Ctrl + F".
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: dict[str, str] = {}
        self._pid: str | None = None
        self._buf: list[str] = []
        self._stack: list[bool] = []  # inside the paragraph: is this open element skipped?
        self._skip = 0

    def _close(self) -> None:
        if self._pid is not None:
            text = " ".join("".join(self._buf).split())
            self.paragraphs.setdefault(self._pid, text)  # first occurrence wins
        self._pid, self._buf, self._stack, self._skip = None, [], [], 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "p":
            self._close()
            pid = dict(attrs).get("id") or ""
            if pid.startswith("par_id"):
                self._pid = pid
            return
        if self._pid is None:
            return
        if tag in _BLOCK_END:
            self._close()
            return
        if tag in _VOID:
            if tag == "br":
                self._buf.append(" ")
            return
        cls = (dict(attrs).get("class") or "").split()
        skip = "MAC" in cls
        self._stack.append(skip)
        self._skip += skip

    def handle_endtag(self, tag: str) -> None:
        if self._pid is None:
            return
        if tag in _BLOCK_END:
            self._close()
            return
        if tag in _VOID or not self._stack:
            return
        self._skip -= self._stack.pop()

    def handle_data(self, data: str) -> None:
        if self._pid is not None and not self._skip:
            self._buf.append(data)

    def close(self) -> None:
        super().close()
        self._close()


def _help_lang_dir(tree: str | Path) -> Path:
    """Accept the language folder itself (holding ``text/``), or an extracted package root."""
    tree = Path(tree)
    if (tree / "text").is_dir():
        return tree
    base = tree / "usr" / "share" / "libreoffice" / "help" if (tree / "usr").is_dir() else tree
    cands = [d for d in sorted(base.glob("*")) if d.is_dir() and d.name != "media" and (d / "text").is_dir()]
    if len(cands) != 1:
        raise ValueError(f"{tree} holds {len(cands)} LibreOffice help language folders (need exactly one with text/)")
    return cands[0]


def parse_help_tree(tree: str | Path) -> dict[str, str]:
    """``{"<path relative to the language folder>#<par_id>": text}`` for every paragraph of every page.

    Tags stripped, entities unescaped, whitespace collapsed; nothing filtered.
    """
    lang_dir = _help_lang_dir(tree)
    out: dict[str, str] = {}
    for page in sorted((lang_dir / "text").rglob("*.html")):
        parser = _ParagraphParser()
        parser.feed(page.read_text(encoding="utf-8", errors="replace"))
        parser.close()
        rel = page.relative_to(lang_dir).as_posix()
        for pid, text in parser.paragraphs.items():
            out[f"{rel}#{pid}"] = html.unescape(text) if "&" in text else text
    return out


def _width(text: str) -> int:
    """Display width: East Asian wide/fullwidth characters count 2 (ASCII-only text: its length)."""
    if text.isascii():
        return len(text)
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def align_paragraphs(
    paragraphs: Mapping[str, Mapping[str, str]],
    languages: Iterable[str] | None = None,
    *,
    min_chars: int = 40,
    n_eval: int = 200,
    min_parallel: int = _MIN_PARALLEL,
    source: str = "libreoffice-help",
) -> Corpus:
    """Align parsed help trees (``{lang: {key: text}}``, must include "en") into a Corpus.

    A key is *kept* for a language when its text differs from the English one (it is really
    translated) and has at least ``min_chars`` characters; for English, when the English text is
    long enough.  Keys whose English text repeats an earlier key's are dropped, so a paragraph that
    appears on several pages cannot land in both splits.

    The eval split is the ``n_eval`` smallest-hash keys among those kept in *every* language
    (parallel).  If at least ``min_parallel`` further keys are kept in every language, stats is
    those keys (the whole corpus parallel).  Otherwise stats is relaxed to per-language: every key
    kept for that language (English: every key kept for at least one other language) minus the eval
    keys; the corpus is then not marked parallel, but ``ids["eval"]`` still names the parallel eval
    paragraphs and ``eval[lang][i]`` is the same paragraph in every language.
    """
    if "en" not in paragraphs:
        raise ValueError("aligning LibreOffice help needs the English (en) tree as the reference")
    langs = list(paragraphs) if languages is None else list(languages)
    missing = [lang for lang in langs if lang not in paragraphs]
    if missing:
        raise ValueError(f"no help tree for {missing}")
    if not langs:
        raise ValueError("no languages to align")
    en = paragraphs["en"]
    seen: set[str] = set()
    base: list[str] = []
    for key in sorted(en):
        text = en[key]
        if _width(text) >= min_chars and text not in seen:
            seen.add(text)
            base.append(key)
    others = [lang for lang in langs if lang != "en"]
    kept: dict[str, set[str]] = {}
    for lang in others:
        p = paragraphs[lang]
        kept[lang] = {k for k in base if _width(p.get(k, "")) >= min_chars and p[k] != en[k]}
    if others:
        kept["en"] = set().union(*kept.values())
        common = set(base).intersection(*(kept[lang] for lang in others))
    else:
        kept["en"] = set(base)
        common = set(base)
    if not common:
        raise ValueError(
            f"no paragraph of the LibreOffice help is translated (and >= {min_chars} chars) in all of {langs}; "
            "drop the least translated language or lower min_chars"
        )
    ev = _eval_keys(common, n_eval)
    eval_ids = sorted(ev)
    rest = sorted(common - ev)
    parallel = len(rest) >= min_parallel
    stats: dict[str, list[str]] = {}
    if parallel:
        stats_ids: dict[str, list[str]] = {lang: rest for lang in langs}
    else:
        stats_ids = {lang: sorted(kept[lang] - ev) for lang in langs}
    for lang in langs:
        stats[lang] = [paragraphs[lang][k] for k in stats_ids[lang]]
    evals = {lang: [paragraphs[lang][k] for k in eval_ids] for lang in langs}
    ids = {"stats": rest, "eval": eval_ids} if parallel else {}
    return Corpus(languages=langs, stats=stats, eval=evals, ids=ids, source=source, parallel=parallel)


def align_help_trees(
    trees: Mapping[str, str | Path],
    languages: Iterable[str] | None = None,
    *,
    min_chars: int = 40,
    n_eval: int = 200,
    min_parallel: int = _MIN_PARALLEL,
    source: str = "libreoffice-help",
) -> Corpus:
    """Parse already-extracted help trees (``{lang: folder}``, "en" required) and align them."""
    paragraphs = {lang: parse_help_tree(tree) for lang, tree in trees.items()}
    return align_paragraphs(
        paragraphs, languages, min_chars=min_chars, n_eval=n_eval, min_parallel=min_parallel, source=source
    )


# --------------------------------------------------------------------------------------------
# LibreOffice help: fetching the Debian packages
# --------------------------------------------------------------------------------------------


def _debian_code(lang: str) -> str:
    if lang not in LIBREOFFICE_LANGUAGES:
        raise ValueError(
            f"unknown LibreOffice help language {lang!r}; known codes: {', '.join(LIBREOFFICE_LANGUAGES)}"
        )
    return LANGUAGES[lang].debian


def _no_apt(reason: str) -> RuntimeError:
    return RuntimeError(f"{reason}: run `apt-get update` first, {_BRING_YOUR_OWN}")


def _fetch_help_package(lang: str) -> Path:
    """The cached, extracted ``libreoffice-help-<code>`` package folder (downloading it if needed).

    Layout: ``<cache>/debian/libreoffice-help-<code>/{meta.json, help/<LangDir>/text/...}``.
    """
    pkg = f"libreoffice-help-{_debian_code(lang)}"
    dest = cache_root() / "debian" / pkg
    if (dest / "meta.json").is_file():
        return dest
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise _no_apt(f"cannot fetch {pkg}: `{tool}` not found (needs a Debian/Ubuntu machine)")
    with atomic_dir(dest, "meta.json") as tmp:
        tmp.mkdir()
        dl = tmp / "download"
        dl.mkdir()
        r = subprocess.run(["apt-get", "download", pkg], cwd=dl, capture_output=True, text=True)
        debs = sorted(dl.glob("*.deb"))
        if r.returncode != 0 or not debs:
            err = " ".join(line for line in r.stderr.splitlines() if line.startswith("E:"))[:300]
            raise _no_apt(f"`apt-get download {pkg}` failed ({err or 'exit ' + str(r.returncode)})")
        deb = debs[0]
        version = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True).stdout.strip()
        root = tmp / "root"
        r = subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"`dpkg-deb -x {deb.name}` failed: {r.stderr.strip()[:300]}")
        lang_dir = _help_lang_dir(root)
        (tmp / "help").mkdir()
        shutil.move(str(lang_dir), str(tmp / "help" / lang_dir.name))
        shutil.rmtree(root)
        shutil.rmtree(dl)
        meta = {"package": pkg, "version": version, "lang_dir": lang_dir.name, "lang": lang}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return dest


def _cached_paragraphs(lang: str) -> tuple[dict[str, str], dict]:
    pkg_dir = _fetch_help_package(lang)
    meta = json.loads((pkg_dir / "meta.json").read_text(encoding="utf-8"))
    cache = pkg_dir / f"paragraphs-v{_PARSER_VERSION}.json"
    if cache.is_file():
        try:
            return json.loads(cache.read_text(encoding="utf-8")), meta
        except json.JSONDecodeError:
            pass
    paragraphs = parse_help_tree(pkg_dir / "help" / meta["lang_dir"])
    write_json_atomic(cache, paragraphs)
    return paragraphs, meta


def _upstream_version(debian_version: str) -> str:
    v = debian_version.split(":", 1)[-1]
    return v.split("-", 1)[0] if v else "unknown"


def _validate_languages(languages: Iterable[str]) -> list[str]:
    if isinstance(languages, str):
        languages = [s.strip() for s in languages.split(",") if s.strip()]
    langs = list(dict.fromkeys(languages))
    if not langs:
        raise ValueError(f"no languages given; choose among: {', '.join(LIBREOFFICE_LANGUAGES)}")
    for lang in langs:
        _debian_code(lang)
    return langs


def build_libreoffice(
    languages: Iterable[str] = DEFAULT_LANGUAGES,
    out: str | Path | None = None,
    *,
    min_chars: int = 40,
    n_eval: int = 200,
    progress: bool = True,
) -> Corpus:
    """Build the LibreOffice-help corpus for `languages` (Debian packages cached under ``<cache>/debian``).

    English is always fetched as the reference for "is this paragraph translated", even when not
    requested.  Saves the corpus to `out` when given.  See :func:`align_paragraphs` for what is kept.
    """
    from tqdm.auto import tqdm

    langs = _validate_languages(languages)
    need = langs if "en" in langs else ["en", *langs]
    paragraphs: dict[str, dict[str, str]] = {}
    versions: set[str] = set()
    bar = tqdm(need, desc="libreoffice-help", unit="lang", disable=not progress)
    for lang in bar:
        bar.set_postfix_str(lang)
        paragraphs[lang], meta = _cached_paragraphs(lang)
        versions.add(_upstream_version(meta.get("version", "")))
    source = f"libreoffice-help {'/'.join(sorted(versions))} (Debian)"
    corpus = align_paragraphs(paragraphs, langs, min_chars=min_chars, n_eval=n_eval, source=source)
    if out is not None:
        corpus.save(out)
    return corpus


def _default_corpus_dir(languages: list[str], min_chars: int, n_eval: int) -> Path:
    tag = hashlib.sha1(json.dumps([languages, min_chars, n_eval, _PARSER_VERSION]).encode()).hexdigest()[:10]
    return cache_root() / "corpus" / f"libreoffice-{tag}"


def load_corpus(path_or_name: str | Path | None = None, *, progress: bool = True) -> Corpus:
    """Load a corpus by name or path.

    - ``None`` / ``"libreoffice"``: the cached default LibreOffice corpus (:data:`DEFAULT_LANGUAGES`),
      built on first use; ``"libreoffice:en,de,om"`` picks the languages.
    - a folder with ``corpus.json``: :meth:`Corpus.load`
    - a folder of ``<lang>.txt``: :meth:`Corpus.from_text_dir`
    - a ``.jsonl`` file: :meth:`Corpus.from_jsonl`
    """
    name = "libreoffice" if path_or_name is None else str(path_or_name)
    if name == "libreoffice" or name.startswith("libreoffice:"):
        langs = _validate_languages(name.split(":", 1)[1]) if ":" in name else list(DEFAULT_LANGUAGES)
        where = _default_corpus_dir(langs, 40, 200)
        if (where / "corpus.json").is_file():
            try:
                return Corpus.load(where)
            except ValueError:
                pass  # damaged cache: rebuild below
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
