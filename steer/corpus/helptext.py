"""The LibreOffice help as text: parse an extracted help tree, align its paragraphs across languages.

Every help page is HTML whose paragraphs carry stable ids (``<p id="par_id…">``); the same
(page, par_id) in two languages is the same paragraph, so the translated trees give a
paragraph-aligned parallel corpus without any sentence alignment.  Fetching the trees from
Debian's packages is :mod:`steer.corpus.libreoffice`.
"""

from __future__ import annotations

import html
import unicodedata
from collections.abc import Iterable, Mapping
from html.parser import HTMLParser
from pathlib import Path

from steer.corpus.core import Corpus, eval_keys

__all__ = ["PARSER_VERSION", "align_help_trees", "align_paragraphs", "help_lang_dir", "parse_help_tree"]

PARSER_VERSION = 1  # bump when parse_help_tree changes, so cached parses are redone
_MIN_PARALLEL = 1000

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


def help_lang_dir(tree: str | Path) -> Path:
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
    lang_dir = help_lang_dir(tree)
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
    ev = eval_keys(common, n_eval)
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
