"""steer.corpus on fake LibreOffice help trees (no apt), plus one real download marked `integration`."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from steer.corpus import Corpus, align_help_trees, build_libreoffice, load_corpus, parse_help_tree
from steer.corpus.core import key_hash

PAGE = """<!DOCTYPE html><html lang="{lang}"><head><title>t</title></head><body>
<header><p dir="auto">LibreOffice 7.4 Help</p></header>
<div id="DisplayArea"><h1 id="hd_id1" dir="auto">Heading</h1>
{paras}
<div class="tip"><div class="notetext"><p id="par_id_tip" dir="auto">{tip}
</div></div>
</div></body></html>
"""


def _sentence(lang: str, i: int) -> str:
    words = {"en": "the paragraph number", "de": "der Absatz Nummer", "om": "keeyyata lakkoofsa"}[lang]
    return f"This is {words} {i} with <span class=\"emph\">enough</span> &amp; more text to pass."


def _write_tree(root: Path, lang_dir: str, lang: str, n: int, *, untranslated=(), short=(), extract=True) -> Path:
    """An extracted-package-like tree: usr/share/libreoffice/help/<lang_dir>/text/... plus a media folder."""
    base = root / "usr/share/libreoffice/help"
    (base / "media").mkdir(parents=True, exist_ok=True)
    for page in range(2):
        paras = []
        for i in range(n):
            key = page * 1000 + i
            text = _sentence("en" if (lang == "en" or key in untranslated) else lang, key)
            if key in short:
                text = "Short."
            paras.append(f'<p id="par_id{key}" class="paragraph" dir="auto">{text}</p>')
        paras.append('<p class="embedded" dir="auto">no id here, long enough to count if we were careless</p>')
        tip = (
            'Use <span class="switchinline"><span hidden="true" class="MAC"><span class="keycode">Command</span></span>'
            '<span hidden="true"><span class="keycode">Ctrl</span></span></span> + F to search quickly in '
            + lang
        )
        f = base / lang_dir / "text" / "shared" / f"page{page}.html"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(PAGE.format(lang=lang, paras="\n".join(paras), tip=tip), encoding="utf-8")
    return root if extract else base / lang_dir


@pytest.fixture
def trees(tmp_path: Path) -> dict[str, Path]:
    return {
        "en": _write_tree(tmp_path / "en", "en-US", "en", 30),
        "de": _write_tree(tmp_path / "de", "de", "de", 30, untranslated={3, 1004}, short={5}),
        "om": _write_tree(tmp_path / "om", "om", "om", 30, untranslated={7}, extract=False),
    }


def test_parse_strips_tags_unescapes_and_drops_mac_variant(trees):
    p = parse_help_tree(trees["en"])
    assert p["text/shared/page0.html#par_id0"] == (
        "This is the paragraph number 0 with enough & more text to pass."
    )
    assert p["text/shared/page1.html#par_id_tip"] == "Use Ctrl + F to search quickly in en"
    assert not any("no id here" in t for t in p.values())
    assert len(p) == 2 * 31


def test_align_keeps_only_translated_long_paragraphs(trees):
    c = align_help_trees(trees, ["en", "de", "om"], n_eval=10, min_parallel=0)
    assert c.parallel and c.languages == ["en", "de", "om"]
    all_ids = c.ids["stats"] + c.ids["eval"]
    assert len(all_ids) == len(set(all_ids))
    for dropped in ("page0.html#par_id3", "page1.html#par_id4", "page0.html#par_id5", "page0.html#par_id7"):
        assert f"text/shared/{dropped}" not in all_ids  # untranslated in de, untranslated in de, short, om
    # 2 pages x (30 + tip) = 62 keys; the tips are 36 chars (< min_chars), 4 more dropped above
    assert len(all_ids) == 2 * 30 - 4
    for split in ("stats", "eval"):
        for i, key in enumerate(c.ids[split]):
            n = int(key.rsplit("par_id", 1)[1])
            texts = c.stats if split == "stats" else c.eval
            assert f" {n} " in texts["en"][i] and f" {n} " in texts["de"][i] and f" {n} " in texts["om"][i]
            assert "Absatz" in texts["de"][i] and "keeyyata" in texts["om"][i]
    assert c.ids["stats"] == sorted(c.ids["stats"]) and len(c.eval["om"]) == 10


def test_split_is_deterministic_and_independent_of_language_set(trees):
    a = align_help_trees(trees, ["en", "de", "om"], n_eval=8, min_parallel=0)
    b = align_help_trees(dict(reversed(list(trees.items()))), ["en", "de", "om"], n_eval=8, min_parallel=0)
    assert a.ids == b.ids and a.fingerprint() == b.fingerprint()
    # eval = the n smallest SHA-1 hashes of "path#par_id" among the common keys
    common = a.ids["stats"] + a.ids["eval"]
    assert set(a.ids["eval"]) == set(sorted(common, key=key_hash)[:8])
    assert set(a.ids["eval"]).isdisjoint(a.ids["stats"])


def test_relaxed_stats_when_too_few_parallel(trees):
    c = align_help_trees(trees, ["en", "de", "om"], n_eval=10, min_parallel=10_000)
    assert not c.parallel and c.ids == {}
    assert len(c.eval["de"]) == len(c.eval["om"]) == 10
    assert len(c.stats["de"]) != len(c.stats["om"])  # per-language stats


def test_save_load_roundtrip_and_fingerprint(trees, tmp_path):
    c = align_help_trees(trees, ["en", "de", "om"], n_eval=5, min_parallel=0)
    fp = c.fingerprint()
    assert fp == c.fingerprint() and len(fp) == 64
    out = c.save(tmp_path / "corpus")
    meta = json.loads((out / "corpus.json").read_text())
    assert meta["fingerprint"] == fp and meta["counts"]["de"]["eval"] == 5
    d = Corpus.load(out)
    assert d == c and d.fingerprint() == fp
    assert load_corpus(out) == c
    # changing one text changes the fingerprint
    d.stats["de"][0] += "!"
    assert d.fingerprint() != fp
    # overwrite an existing corpus folder
    c.subset(max_stats=3).save(out)
    assert len(Corpus.load(out).stats["en"]) == 3


def test_load_detects_tampering_and_missing_files(trees, tmp_path):
    out = align_help_trees(trees, n_eval=5, min_parallel=0).save(tmp_path / "c")
    lines = (out / "de.jsonl").read_text().splitlines()
    (out / "de.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ValueError, match="damaged.*unequal eval lengths"):
        Corpus.load(out)
    (out / "de.jsonl").write_text("\n".join(lines).replace("Absatz", "Absätze") + "\n")
    with pytest.raises(ValueError, match="fingerprint"):
        Corpus.load(out)
    (out / "de.jsonl").unlink()
    with pytest.raises(ValueError, match="missing de.jsonl"):
        Corpus.load(out)
    with pytest.raises(ValueError, match="not a steer corpus"):
        Corpus.load(tmp_path)


def test_save_is_atomic(trees, tmp_path, monkeypatch):
    c = align_help_trees(trees, n_eval=5, min_parallel=0)
    out = c.save(tmp_path / "c")
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(json, "dumps", boom)
    with pytest.raises(OSError):
        c.subset(max_stats=2).save(tmp_path / "c")
    with pytest.raises(OSError):
        c.save(tmp_path / "new")
    monkeypatch.undo()
    assert not (tmp_path / "new").exists()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "de", "en", "om"]  # no temp leftovers


def test_save_refuses_foreign_folder(trees, tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "important.txt").write_text("keep")
    with pytest.raises(ValueError, match="steer did not write"):
        align_help_trees(trees, n_eval=5, min_parallel=0).save(tmp_path / "x")


def test_subset_keeps_alignment(trees):
    c = align_help_trees(trees, n_eval=6, min_parallel=0)
    s = c.subset(["de", "en"], max_stats=4, max_eval=2)
    assert s.languages == ["de", "en"] and s.parallel
    assert s.eval["de"] == c.eval["de"][:2] and s.ids["eval"] == c.ids["eval"][:2] and len(s.ids["stats"]) == 4
    with pytest.raises(ValueError, match="not in this corpus"):
        c.subset(["fr"])


def test_text_dir(tmp_path):
    d = tmp_path / "txt"
    d.mkdir()
    (d / "en.txt").write_text("\n".join(f"english line {i}" for i in range(20)) + "\n\n")
    (d / "de.txt").write_text("\n".join(f"deutsche Zeile {i}" for i in range(20)))
    c = Corpus.from_text_dir(d)
    assert c.parallel and len(c.eval["en"]) == 2 and len(c.stats["de"]) == 18
    for i, k in enumerate(c.ids["eval"]):
        assert c.eval["en"][i].endswith(f" {k}") and c.eval["de"][i].endswith(f" {k}")
    assert Corpus.from_text_dir(d).fingerprint() == c.fingerprint()
    (d / "fr.txt").write_text("une ligne\nune autre ligne\n")
    c3 = load_corpus(d)
    assert not c3.parallel and c3.ids == {} and sorted(c3.languages) == ["de", "en", "fr"]
    (d / "om.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="no text for"):
        Corpus.from_text_dir(d)


def test_jsonl(tmp_path):
    f = tmp_path / "c.jsonl"
    recs = [{"lang": lang, "text": f"{lang} text {i}", "id": f"s{i}"} for i in range(10) for lang in ("en", "de")]
    recs.append({"lang": "en", "text": "held out", "id": "x", "split": "eval"})
    recs.append({"lang": "de", "text": "zurückgehalten", "id": "x", "split": "eval"})
    f.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in recs) + "\n")
    c = Corpus.from_jsonl(f)
    assert c.parallel and "x" in c.ids["eval"]
    i = c.ids["eval"].index("x")
    assert c.eval["en"][i] == "held out" and c.eval["de"][i] == "zurückgehalten"
    assert load_corpus(f) == c
    # no ids: per-language split by hash, not parallel
    f2 = tmp_path / "b.jsonl"
    f2.write_text("\n".join(json.dumps({"lang": "en", "text": f"t{i}"}) for i in range(10)))
    c2 = Corpus.from_jsonl(f2)
    assert not c2.parallel and len(c2.eval["en"]) == 1 and len(c2.stats["en"]) == 9
    f3 = tmp_path / "bad.jsonl"
    f3.write_text('{"text": "no lang"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        Corpus.from_jsonl(f3)
    f3.write_text("\n")
    with pytest.raises(ValueError, match="no texts"):
        Corpus.from_jsonl(f3)


def test_bad_inputs(trees, tmp_path, monkeypatch):
    monkeypatch.setenv("STEER_HOME", str(tmp_path / "home"))
    with pytest.raises(ValueError, match="unknown LibreOffice help language 'xx'.*known codes: .*om"):
        build_libreoffice(["en", "xx"], progress=False)
    with pytest.raises(ValueError, match="no languages"):
        build_libreoffice([], progress=False)
    with pytest.raises(ValueError):
        load_corpus(tmp_path / "nothing-here")
    with pytest.raises(ValueError, match="needs the English"):
        align_help_trees({"de": trees["de"]})
    # nothing translated in every language -> empty corpus error
    with pytest.raises(ValueError, match="no paragraph"):
        align_help_trees({"en": trees["en"], "de": trees["en"]})
    with pytest.raises(ValueError, match="no text for"):
        Corpus(languages=["en"], stats={"en": []}, eval={"en": []})


def test_missing_apt_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("STEER_HOME", str(tmp_path))
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError) as e:
        build_libreoffice(["en", "de"], progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "apt-get update" in msg and "--from-dir" in msg and "--jsonl" in msg


def test_apt_download_failure_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("STEER_HOME", str(tmp_path))
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")

    def fake_run(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 100, "", "E: Unable to locate package libreoffice-help-de\n")

    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(RuntimeError) as e:
        build_libreoffice(["de"], progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "Unable to locate" in msg and "apt-get update" in msg
    assert not (tmp_path / "debian" / "libreoffice-help-en-us").exists()  # nothing half-extracted


@pytest.mark.integration
def test_build_libreoffice_for_real(tmp_path):
    """Downloads libreoffice-help-{en-us,de,om} with apt-get (uses the normal cache)."""
    c = build_libreoffice(["de", "en", "om"], out=tmp_path / "c", progress=False)
    assert c.parallel and c.source.startswith("libreoffice-help ") and c.languages == ["de", "en", "om"]
    assert len(c.eval["om"]) == 200 and len(c.stats["om"]) >= 1000
    assert Corpus.load(tmp_path / "c") == c
