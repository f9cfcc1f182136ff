"""The embedded default corpus: the LibreOffice help (MPL-2.0), from Debian's ``libreoffice-help-<code>`` packages.

Each package is fetched once with ``apt-get download``, unpacked with ``dpkg-deb`` and cached under
``<cache>/debian``, with its parsed paragraphs beside it; :mod:`steer.corpus.helptext` parses and
aligns the trees.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from steer._io import atomic_dir, cache_root, write_json_atomic
from steer.corpus.core import Corpus
from steer.corpus.helptext import PARSER_VERSION, align_paragraphs, help_lang_dir, parse_help_tree
from steer.corpus.sources import BRING_YOUR_OWN
from steer.languages import DEFAULT_LANGUAGES, LANGUAGES, LIBREOFFICE_LANGUAGES, normalise_code
from steer.progress import progress_bar

__all__ = ["build_libreoffice", "default_corpus_dir", "validate_languages"]


def _debian_code(lang: str) -> str:
    if lang not in LIBREOFFICE_LANGUAGES:
        raise ValueError(
            f"unknown LibreOffice help language {lang!r}; known codes: {', '.join(LIBREOFFICE_LANGUAGES)}"
        )
    return LANGUAGES[lang].debian


def _no_apt(reason: str) -> RuntimeError:
    return RuntimeError(f"{reason}: run `apt-get update` first, {BRING_YOUR_OWN}")


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
        lang_dir = help_lang_dir(root)
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
    cache = pkg_dir / f"paragraphs-v{PARSER_VERSION}.json"
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


def validate_languages(languages: Iterable[str]) -> list[str]:
    """Known LibreOffice help codes, deduplicated in order (a comma-separated string is split); else a ValueError."""
    if isinstance(languages, str):
        languages = [s.strip() for s in languages.split(",") if s.strip()]
    langs = list(dict.fromkeys(normalise_code(lang, what="languages") for lang in languages))
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
    langs = validate_languages(languages)
    need = langs if "en" in langs else ["en", *langs]
    paragraphs: dict[str, dict[str, str]] = {}
    versions: set[str] = set()
    bar = progress_bar(progress, len(need), "libreoffice-help", unit="lang")
    try:
        for lang in need:
            bar.set_postfix_str(lang)
            paragraphs[lang], meta = _cached_paragraphs(lang)
            versions.add(_upstream_version(meta.get("version", "")))
            bar.update()
    finally:
        bar.close()
    source = f"libreoffice-help {'/'.join(sorted(versions))} (Debian)"
    corpus = align_paragraphs(paragraphs, langs, min_chars=min_chars, n_eval=n_eval, source=source)
    if out is not None:
        corpus.save(out)
    return corpus


def default_corpus_dir(languages: list[str], min_chars: int, n_eval: int) -> Path:
    """Where :func:`~steer.corpus.core.load_corpus` caches the LibreOffice corpus built with these settings."""
    tag = hashlib.sha1(json.dumps([languages, min_chars, n_eval, PARSER_VERSION]).encode()).hexdigest()[:10]
    return cache_root() / "corpus" / f"libreoffice-{tag}"
