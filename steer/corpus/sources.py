"""Corpora from your own text: a folder of ``<lang>.txt`` files, one JSONL file, or a Hugging Face
dataset such as FLORES-200.  Each loader returns a :class:`~steer.corpus.core.Corpus` (also reachable as
``Corpus.from_text_dir`` / ``Corpus.from_jsonl`` / ``Corpus.from_hf``).

Texts are whitespace-normalised; splits are assigned by hash (:func:`~steer.corpus.core.eval_keys`),
never by position, and a corpus is parallel only when its texts line up in every language.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from steer.corpus.core import Corpus, eval_keys, n_eval_for
from steer.languages import LANGUAGES, is_code, normalise_code, normalise_codes

__all__ = ["BRING_YOUR_OWN", "FLORES_CODES", "from_hf", "from_jsonl", "from_text_dir"]

# FLORES-200 configuration names for from_hf(); extend by passing config_for.
FLORES_CODES = {code: lang.flores for code, lang in LANGUAGES.items() if lang.flores}

# The hint every "cannot get the default corpus" error ends with.
BRING_YOUR_OWN = (
    "or bring your own corpus with `steer corpus build --from-dir DIR` (a folder of <lang>.txt) or --jsonl FILE"
)


def read_utf8(path: Path) -> str:
    """The text of `path`; a file that is not UTF-8 is a one-line error naming the file and the line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8").removeprefix("\ufeff")  # a byte-order mark is not text
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ValueError(
            f"{path}:{line}: not UTF-8 text ({error.reason}, byte 0x{data[error.start]:02x}); save the file as UTF-8"
        ) from None


def _is_code_like(stem: str) -> bool:
    return is_code(stem.strip().lower().replace("_", "-"))


def from_text_dir(path: str | Path, eval_fraction: float = 0.1, languages: Iterable[str] | None = None) -> Corpus:
    """A folder of ``<lang>.txt`` files, one text per non-empty line (blank lines are skipped).

    If every file has the same number of texts, line i is taken to be the same text in every
    language and the corpus is parallel (the eval lines are the same in every file).  The eval
    split is ``eval_fraction`` of the texts, chosen by hash (of the line number when parallel,
    of the text otherwise).
    """
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{path} is not a folder of <lang>.txt files")
    found = sorted(path.glob("*.txt"))
    bad = [p.name for p in found if not _is_code_like(p.stem)]
    if bad:
        shown = ", ".join(bad[:3]) + (", ..." if len(bad) > 3 else "")
        raise ValueError(f"{path}: {shown} not named <lang>.txt for a language code (e.g. en.txt, pt-br.txt); "
                         "rename or move them")
    codes = normalise_codes([p.stem for p in found], what=f"{path}: the <lang>.txt files")
    files = dict(zip(codes, found))
    if languages is not None:
        langs = normalise_codes(languages, what="languages")
        missing = [lang for lang in langs if lang not in files]
        if missing:
            raise ValueError(f"{path} has no {', '.join(m + '.txt' for m in missing)}")
        files = {lang: files[lang] for lang in langs}
    if not files:
        raise ValueError(f"{path} has no <lang>.txt files; write one file per language, one text per line")
    texts = {}
    for lang, p in files.items():
        lines = [" ".join(line.split()) for line in read_utf8(p).splitlines()]
        texts[lang] = [line for line in lines if line]
    return _from_lists(texts, eval_fraction, source=f"textdir:{path.resolve()}")


def _from_lists(texts: dict[str, list[str]], eval_fraction: float, source: str) -> Corpus:
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
        ev = eval_keys(keys, n_eval_for(n, eval_fraction))
        ids = {"stats": [k for k in keys if k not in ev], "eval": [k for k in keys if k in ev]}
        for lang, t in texts.items():
            stats[lang] = [t[int(k)] for k in ids["stats"]]
            evals[lang] = [t[int(k)] for k in ids["eval"]]
    else:
        for lang, t in texts.items():
            keys = [f"{i}:{s}" for i, s in enumerate(t)]
            ev = eval_keys(keys, n_eval_for(len(t), eval_fraction))
            stats[lang] = [s for k, s in zip(keys, t) if k not in ev]
            evals[lang] = [s for k, s in zip(keys, t) if k in ev]
    return Corpus(languages=list(texts), stats=stats, eval=evals, ids=ids, source=source, parallel=parallel)


def from_jsonl(path: str | Path, eval_fraction: float = 0.1, languages: Iterable[str] | None = None) -> Corpus:
    """One JSONL file of ``{"lang", "text"}`` records, optionally with ``"split"`` ("stats"/"eval") and ``"id"``.

    Records without a split are assigned by hash (of the id if there is one, else of the text).
    The corpus is parallel when every record has an id and each split holds the same ids in
    every language; texts are then ordered by the first language's order of ids.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} is not a file")
    records: list[dict] = []
    first_line: dict[tuple[str, str], int] = {}  # (lang, id) -> the line that used it first
    for n, line in enumerate(read_utf8(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            lang, text = rec["lang"], rec["text"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ValueError(f'{path}:{n}: expected a JSON object with "lang" and "text"') from None
        if not isinstance(lang, str) or not lang.strip():
            raise ValueError(f'{path}:{n}: "lang" must be a language code (a string), got {json.dumps(lang)}')
        lang = normalise_code(lang, what=f'{path}:{n}: "lang"')
        if not isinstance(text, str):
            raise ValueError(f'{path}:{n}: "text" must be a string, got {json.dumps(text)}; fix or drop the line')
        split = rec.get("split")
        if split not in (None, "stats", "eval"):
            raise ValueError(f'{path}:{n}: split must be "stats" or "eval", got {split!r}')
        rid = rec.get("id")
        if rid is not None:
            if not isinstance(rid, (str, int)) or isinstance(rid, bool):
                raise ValueError(f'{path}:{n}: "id" must be a string or an integer, got {json.dumps(rid)}')
            seen = first_line.setdefault((lang, str(rid)), n)
            if seen != n:
                raise ValueError(
                    f"{path}:{n}: id {json.dumps(rid)} appears twice for language '{lang}' (first on line {seen}); "
                    "ids must be unique within a language"
                )
        text = " ".join(text.split())
        if text:
            records.append({"lang": lang, "text": text, "split": split, "id": rid})
    if not records:
        raise ValueError(f"{path} holds no texts; write one JSON object per line with lang and text")
    langs = list(dict.fromkeys(r["lang"] for r in records))
    if languages is not None:
        want = normalise_codes(languages, what="languages")
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
        ev = eval_keys(keys, n_eval_for(n, eval_fraction))
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
    return Corpus(
        languages=langs,
        stats={lang: [r["text"] for r in by[(lang, "stats")]] for lang in langs},
        eval={lang: [r["text"] for r in by[(lang, "eval")]] for lang in langs},
        ids=ids if parallel else {},
        source=f"jsonl:{path.resolve()}",
        parallel=parallel,
    )


def from_hf(
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
    langs = normalise_codes(languages, what="languages")
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
                f"{type(e).__name__}: {first[:300]} -- check the network / HF token, {BRING_YOUR_OWN}"
            ) from None
        if text_field not in ds.column_names:
            raise ValueError(f"{name} ({config}) has no field {text_field!r}; it has {ds.column_names}")
        return [" ".join(str(t).split()) for t in ds[text_field]]

    source = f"hf:{name}"
    if eval_split is None:
        texts = {lang: rows(lang, split) for lang in langs}
        return _from_lists(texts, eval_fraction, source=source)
    stats = {lang: rows(lang, split) for lang in langs}
    evals = {lang: rows(lang, eval_split) for lang in langs}
    parallel = len({len(v) for v in stats.values()}) == 1 and len({len(v) for v in evals.values()}) == 1
    ids = {}
    if parallel:
        ids = {"stats": [f"{split}:{i}" for i in range(len(stats[langs[0]]))],
               "eval": [f"{eval_split}:{i}" for i in range(len(evals[langs[0]]))]}  # fmt: skip
    return Corpus(languages=langs, stats=stats, eval=evals, ids=ids, source=source, parallel=parallel)

