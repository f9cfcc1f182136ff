"""One table of bad inputs: every row one case, through the API or the `steer` command, on the tiny models.

Each row asserts the error type (or, for legitimate input, the warning or the outcome), that the message
is one line naming the cause (a regex), that no file under the row's folders or the shared fixtures was
written, changed or deleted (unless the row is legitimate work that writes), that the tiny model keeps
the hooks it had, and that no model was loaded where the input can be checked before loading one.

Rows through the command line assert exit code 2 and either steer's `steer: error: ...` line or, for
values argparse checks (`usage=True`), argparse's own `error: argument ...` line.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

import steer
import steer.align.training
import steer.bench.alignment
import steer.bench.runner
import steer.corpus
import steer.models
from steer._io import atomic_dir, atomic_file, prepare_out, write_json_atomic, write_text_atomic
from steer.align import AlignConfig, align
from steer.bench import demo_config, run_bench, run_demo
from steer.bench.demo import _skip_transfer_without_low_resource
from steer.bench.delta_ppl import ablate_language
from steer.bench.schema import load_config
from steer.cli import main
from steer.collection import _save_checkpoint, checkpoint_file
from steer.corpus import Corpus, load_corpus
from steer.hooks import hook_count
from steer.neurons import NeuronSet
from steer.stats import ActivationStats
from steer.steering import Intervention, Steering
from steer.testing import tiny_model_dir

from conftest import TEXTS

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------ shared inputs (made once, read-only)


def _other_model_set(info: dict) -> NeuronSet:
    membership = torch.zeros((2, info["n_layers"], info["d_mlp"]), dtype=torch.bool)
    membership[0, 0, :3] = True
    membership[1, -1, 5:8] = True
    return NeuronSet(["en", "de"], membership, method="custom", meta={"model": info})


@pytest.fixture(scope="module")
def shared(tmp_path_factory, tiny, tiny_root, tiny_llama, tiny_corpus, tiny_stats, tiny_neurons):
    """Files every row may read: never changed by a row (each row checks)."""
    root = tmp_path_factory.mktemp("shared")
    tiny_stats.save(root / "stats")
    tiny_neurons.save(root / "neurons.json")
    info = steer.model_info(tiny).to_dict()
    # a set where "de" has no neuron, "en" and "ja" a few specific ones
    membership = torch.zeros((3, info["n_layers"], info["d_mlp"]), dtype=torch.bool)
    membership[0, 0, [1, 2]] = True
    membership[2, 3, [4, 5, 6]] = True
    NeuronSet(["en", "de", "ja"], membership, method="custom", meta={"model": info}).save(root / "sparse.json")
    # files made for the tiny llama (another model: 3 layers, other weights)
    llama = steer.model_info(tiny_llama).to_dict()
    _other_model_set(llama).save(root / "llama_neurons.json")
    same_shape = dict(llama, n_layers=info["n_layers"], name="llama-lookalike")  # tiny gemma's shape, other weights
    _other_model_set(same_shape).save(root / "lookalike_neurons.json")
    shape = (2, llama["n_layers"], llama["d_mlp"])
    ActivationStats.from_counts(["en", "de"], torch.ones(shape, dtype=torch.int64), torch.tensor([10, 10]),
                                torch.ones(shape, dtype=torch.float64), model=llama).save(root / "llama_stats")
    # stats where "de" counted no token
    shape = (3, info["n_layers"], info["d_mlp"])
    active = torch.randint(0, 5, shape)
    active[1] = 0
    ActivationStats.from_counts(["en", "de", "ja"], active, torch.tensor([10, 0, 10]), torch.zeros(shape),
                                model=info).save(root / "zero_de_stats")
    tiny_corpus.save(root / "corpus")
    texts = root / "texts"
    texts.mkdir()
    for lang, lines in TEXTS.items():
        (texts / f"{lang}.txt").write_text("\n".join(lines * 3) + "\n", encoding="utf-8")
    (root / "bench.toml").write_text(
        f'[model]\nname = "{tiny_model_dir("gemma3", root=tiny_root)}"\n[corpus]\nsource = "{texts}"\n'
        f'[stats]\npath = "{root / "stats"}"\n[neurons.z]\npath = "{root / "neurons.json"}"\n[bench.layers]\n'
    )
    return root


class Env:
    """What a row works with: the tiny models and fixtures, the shared files (`s`), its own folder (`tmp`)."""

    def __init__(self, tmp: Path, s: Path, tiny, tiny_dir, llama, llama_dir, corpus, stats, neurons, monkeypatch):
        self.tmp, self.s, self.tiny, self.tiny_dir, self.llama, self.llama_dir = tmp, s, tiny, tiny_dir, llama, llama_dir
        self.corpus, self.stats, self.neurons, self.mp = corpus, stats, neurons, monkeypatch
        self.out = tmp / "out"
        self.value: Any = None  # what a setup hands to its row
        self.made: dict[str, str] = {}  # the inputs a row wrote itself (not the code under test): path -> hash

    def register(self, path: Path) -> Path:
        self.made.update(snapshot(path) if path.is_dir() else {str(path): _hash(path)})
        return path

    def write(self, name: str, content: str | bytes) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
        return self.register(path)

    def copy(self, name: str) -> Path:
        source, target = self.s / name, self.tmp / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, target)
        return self.register(target)

    def edit_json(self, name: str, change: Callable[[dict], None]) -> Path:
        path = self.copy(name)
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))
        return self.register(path)

    def edit_stats_json(self, change: Callable[[dict], None]) -> Path:
        folder = self.copy("stats")
        data = json.loads((folder / "stats.json").read_text())
        change(data)
        (folder / "stats.json").write_text(json.dumps(data))
        return self.register(folder)

    def user_folder(self, name: str = "mine") -> Path:
        folder = self.tmp / name
        folder.mkdir()
        (folder / "notes.txt").write_text("keep me")
        return self.register(folder)

    def a_file(self, name: str = "taken") -> Path:
        return self.write(name, "a file, not a folder")


@pytest.fixture()
def env(tmp_path, shared, tiny, tiny_dir, tiny_root, tiny_llama, tiny_corpus, tiny_stats, tiny_neurons, monkeypatch):
    return Env(tmp_path, shared, tiny, tiny_dir, tiny_llama, tiny_model_dir("llama", root=tiny_root), tiny_corpus,
               tiny_stats, tiny_neurons, monkeypatch)


@pytest.fixture()
def loads(monkeypatch, tiny, tiny_dir, tiny_llama, tiny_root):
    """Model loading: the tiny models come from the session (no reload); where a row says it loads no
    model, loading the tiny model or any weights fails the row (the input must be checked first)."""
    state = {"allow": False}
    known = {str(Path(tiny_dir).resolve()): tiny, str(tiny_model_dir("llama", root=tiny_root).resolve()): tiny_llama}
    real_load, real_hf = steer.models.load_model, steer.models.load_hf_model

    def load_model(name_or_path=None, *, device="auto", dtype="auto", device_map=None, **kwargs):
        target = steer.models.resolve_device(device)
        steer.models.resolve_dtype(dtype, target)
        _, source = steer.models.resolve_model(name_or_path)
        cached = known.get(str(Path(source).resolve()))
        if cached is None:
            return real_load(name_or_path, device=device, dtype=dtype, device_map=device_map, **kwargs)
        if not state["allow"]:
            raise AssertionError(f"the model {name_or_path} was loaded before the input was checked")
        return cached

    def load_hf_model(*args, **kwargs):
        if not state["allow"]:
            raise AssertionError("model weights were loaded before the input was checked")
        return real_hf(*args, **kwargs)

    for module in (steer, steer.models, steer.bench.runner, steer.bench.alignment):
        monkeypatch.setattr(module, "load_model", load_model)
    for module in (steer.models, steer.align.training):
        monkeypatch.setattr(module, "load_hf_model", load_hf_model)
    return state


def _hash(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def snapshot(*roots: Path) -> dict[str, str]:
    """Every file under the roots with a hash of its bytes (empty folders do not count)."""
    return {str(path): _hash(path) for root in roots for path in sorted(root.rglob("*")) if path.is_file()}


# ------------------------------------------------------------------ the table

@dataclass
class Case:
    id: str
    act: Callable[[Env], Any]  # API: does it; CLI: returns argv
    expect: type[BaseException] | type[Warning] | None  # None: legitimate input, no error
    match: str | None = None  # regex the message (or warning) must match
    cli: bool = False
    usage: bool = False  # CLI: argparse rejects the value (its own "error: argument ..." line)
    setup: Callable[[Env], Any] | None = None
    loads: bool = False  # the row may load (the tiny) model
    writes: bool = False  # legitimate work that writes files
    check: Callable[[Env], Any] | None = None
    exit_code: int = 2


def api(id, act, error, match, **kw) -> Case:
    return Case(id, act, error, match, **kw)


def cli(id, argv, match, **kw) -> Case:
    return Case(id, argv, None, match, cli=True, **kw)


def fine(id, act, check=None, **kw) -> Case:
    return Case(id, act, None, None, check=check, **kw)


def warns(id, act, warning, match, **kw) -> Case:
    return Case(id, act, warning, match, **kw)


def _s(*parts) -> list[str]:
    return [str(p) for p in parts]


# argv builders: a valid command, to which a row appends (argparse keeps an option's last value)
def COLLECT(e, *extra):
    return _s("collect", "--model", e.tiny_dir, "--corpus", e.s / "corpus", "--out", e.out, *extra)


def IDENTIFY(e, *extra, stats=None):
    return _s("identify", stats or e.s / "stats", "--out", e.tmp / "n.json", *extra)


def ABLATE(e, *extra, language="en", neurons="sparse.json"):
    return _s("ablate", "--model", e.tiny_dir, "--neurons", e.s / neurons, "--language", language,
              "--corpus", e.s / "corpus", "--n-texts", "1", "--out", e.out, *extra)


def GENERATE(e, *extra):
    return _s("generate", "Hello", "--model", e.tiny_dir, "--max-new-tokens", "2", *extra)


def FORCE(e, *extra):
    """Forcing with a rule (--mode diffmean: nothing to fit); LEARN: with the default, learned, push."""
    return LEARN(e, "--mode", "diffmean", *extra)


def LEARN(e, *extra):
    return GENERATE(e, "--neurons", e.s / "neurons.json", "--stats", e.s / "stats", "--force-language", "de", *extra)


def BENCH(e, *extra):
    return _s("bench", e.s / "bench.toml", "--out", e.out, *extra)


def COMPARE(e, *extra):
    return _s("compare", e.s / "neurons.json", e.s / "sparse.json", "--out", e.out, *extra)


def ALIGN(e, *extra):
    return _s("align", "--model", e.tiny_dir, "--corpus", e.s / "texts", "--train-languages", "de",
              "--out", e.out, "--steps", "1", *extra)


def DEMO(e, *extra):
    return _s("demo", "--quick", "--model", e.tiny_dir, "--corpus", e.s / "texts", "--out", e.out, *extra)


def CORPUS(e, *extra):
    return _s("corpus", "build", "--out", e.out, *extra)


# ---- rows that need a few lines


def _collect_checkpoint(e: Env):
    texts = {"en": ["The cat sits on the mat."], "de": ["Die Katze sitzt."]}
    steer.collect(e.tiny, texts, batch_size=1, checkpoint=e.tmp / "ck", progress=False)
    e.value = texts


def _stats_with_nan(e: Env) -> Path:
    from safetensors import safe_open
    from safetensors.torch import save_file

    folder = e.copy("stats")
    with safe_open(str(folder / "stats.safetensors"), framework="pt") as handle:
        header = handle.metadata()
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    tensors["sums"][0, 0, 0] = float("nan")
    save_file(tensors, str(folder / "stats.safetensors"), metadata=header)
    return e.register(folder)


def _truncate(e: Env, size: int | None = None) -> Path:
    folder = e.copy("stats")
    data = (folder / "stats.safetensors").read_bytes()
    (folder / "stats.safetensors").write_bytes(data[: len(data) // 2] if size is None else data[:size])
    return e.register(folder)


def _killed_checkpoint_write(e: Env):
    """A kill while the next checkpoint is written keeps the previous one (and leaves no temporary)."""
    import safetensors.torch

    def killed(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise KeyboardInterrupt

    e.mp.setattr(safetensors.torch, "save_file", killed)
    _save_checkpoint(e.tmp / "ck", e.stats, 7, 0)


def _first_checkpoint(e: Env):
    _save_checkpoint(e.tmp / "ck", e.stats, 3, 0)


def _interrupted_generate(e: Env):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    sparse = NeuronSet.load(e.s / "sparse.json")
    with steer.deactivate(e.tiny, sparse["en"], phase="prompt") as outer:
        e.mp.setattr(e.tiny.original_model, "generate", interrupted)
        with pytest.raises(KeyboardInterrupt):
            steer.generate(e.tiny, "Hello", max_new_tokens=1)
        e.value = outer.phase.prompt_width
    assert e.value is None, "an interrupted generate left its prompt boundary on the outer steering"


def _interrupt_identify(e: Env):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    e.mp.setattr(ActivationStats, "load", classmethod(interrupted))
    return IDENTIFY(e)


def _second_steering(e: Env):
    sparse = NeuronSet.load(e.s / "sparse.json")
    steering = steer.deactivate(e.tiny, sparse)
    with steering:
        steering.apply()


def _interrupted_atomic_write(e: Env):
    with atomic_file(e.tmp / "kept.json") as tmp:
        tmp.write_text('{"new": tru')
        raise KeyboardInterrupt


def _edited_corpus(e: Env):
    """A saved corpus whose file gained a line after saving: its fingerprint no longer matches."""
    folder = e.copy("corpus")
    with open(folder / "en.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"id": "stats:99", "split": "stats", "text": "an added line"}) + "\n")
    e.value = e.register(folder)


def _no_build(*args, **kwargs):
    raise AssertionError("the corpus was built before --out was checked")


def _bench_config(e: Env, text: str) -> Path:
    return e.write("bench.toml", text)


GOOD_TOML = '[corpus]\nlanguages = ["en", "de"]\n[neurons.z]\nmethod = "zhang2025"\n[bench.delta_ppl]\n'


def _toml(e: Env, text: str):
    return load_config(_bench_config(e, text))


def _no_done_batches(e: Env):
    meta = json.loads((e.out / "stats.json").read_text())
    assert "done_batches" not in meta and sorted(meta["languages"]) == ["de", "en"]
    assert not (e.out / "checkpoint").exists(), "collect left its checkpoint after success"


def _two_language_texts(e: Env):
    e.write("small/en.txt", "The cat sits on the mat.\nOpen the file.\n")
    e.write("small/de.txt", "Die Katze sitzt.\nÖffnen Sie die Datei.\n")



# ---- round two: one output-folder rule, language codes, resume, late checks, errors to act on


def _steer_folder(e: Env, verb: str, name: str = "run", files=("report.md",)) -> Path:
    """A folder steer made for `verb` (its marker lists `files`), as a finished run leaves it."""
    out = prepare_out(e.tmp / name, verb)
    for file in files:
        write_text_atomic(out / file, f"{verb} wrote {file}")
    return e.register(out)


def _user_stats_folder(e: Env) -> Path:
    folder = e.user_folder()
    (folder / "stats.json").write_text('{"mine": true}')
    return e.register(folder)


def _dotfile_folder(e: Env) -> Path:
    e.write("repo/.git/HEAD", "ref: refs/heads/main")
    e.write("repo/.env", "SECRET=1")
    return e.tmp / "repo"


def _rebuild_keeps_readme(e: Env):
    assert main(_s("corpus", "build", "--from-dir", e.s / "texts", "--out", e.out)) == 0
    (e.out / "README.md").write_text("my notes on this corpus")


def _readme_kept(e: Env):
    return (e.out / "README.md").read_text() == "my notes on this corpus" and Corpus.load(e.out).languages == ["de", "en", "ja"]


def _collect_folder_with_foreign_rank(e: Env):
    _two_language_texts(e)
    out = prepare_out(e.out, "collect")
    write_json_atomic(out / "stats.json", {})  # steer's own: a later collect replaces it
    (out / "checkpoint").mkdir()
    (out / "checkpoint" / "rank7.safetensors").write_bytes(b"another run's, not this one's")


def _edit_checkpoint(e: Env, change) -> None:
    """The checkpoint of `_collect_checkpoint`, with its header metadata changed."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    _collect_checkpoint(e)
    file = checkpoint_file(e.tmp / "ck")
    with safe_open(str(file), framework="pt") as handle:
        header = handle.metadata()
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    meta = json.loads(header["meta"])
    change(meta)
    header["meta"] = json.dumps(meta)
    save_file(tensors, str(file), metadata=header)
    e.register(file)


def _transposed_typo(e: Env):
    _collect_checkpoint(e)
    e.value = {"en": ["The cat sits on the mta."], "de": ["Die Katze sitzt."]}  # same words, two letters swapped


def _unrecorded_neurons(e: Env) -> Path:
    return e.edit_json("neurons.json", lambda d: d.update(meta={}))


def _output_phase_on_a_plain_forward(e: Env):
    sparse = NeuronSet.load(e.s / "sparse.json")
    with steer.intervene(e.tiny, Intervention("suppress", languages=["en"], phase="output"), neurons=sparse):
        e.tiny("Hello there")


def _damaged_align_file(e: Env, name: str):
    out = prepare_out(e.out, "align")
    write_text_atomic(out / name, '{"format": "steer.align", "step": 1,')
    e.register(out)


def _one_eval_text_per_language(e: Env):
    for lang in ("en", "de", "eu"):
        e.write(f"one/{lang}.txt", "\n".join(f"{lang} paragraph number {i} with a few words in it." for i in range(12)) + "\n")




def _two_texts_and(e: Env, extra: str) -> Path:
    e.write("t/en.txt", "The cat sits on the mat.\nOpen the file.\n")
    e.write("t/de.txt", "Die Katze sitzt.\nÖffnen Sie die Datei.\n")
    e.write(f"t/{extra}", "This folder holds my corpus.\n")
    return e.tmp / "t"


def _bom_texts(e: Env) -> Path:
    e.write("b/en.txt", "\ufeffThe cat sits on the mat.\nOpen the file.\nSave it.\n")
    e.write("b/de.txt", "\ufeffDie Katze sitzt.\nÖffnen Sie die Datei.\nSpeichern.\n")
    return e.tmp / "b"


def _corpus_of(e: Env, languages: list[str]) -> Path:
    """The shared corpus, only `languages` of it, saved in a folder of its own."""
    folder = e.tmp / "corpus_of"
    e.corpus.subset(languages).save(folder)
    return e.register(folder)


def _corpus_listing(e: Env, languages: list[str]) -> Path:
    """A copy of the shared corpus folder whose corpus.json lists `languages`."""
    folder = e.copy("corpus")
    meta = json.loads((folder / "corpus.json").read_text())
    meta["languages"] = languages
    (folder / "corpus.json").write_text(json.dumps(meta))
    return e.register(folder)


def _with_corpus(e: Env, bench: str) -> str:
    """A config on the shared tiny model and text corpus with one benchmark table."""
    return (f'[model]\nname = "{e.tiny_dir}"\n[corpus]\nsource = "{e.s / "texts"}"\n[neurons.z]\nmethod = "zhang2025"\n'
            + bench)

ZERO_NEURONS = r"(?=.*\bde\b)(?=.*no neuron)"  # names the language and says it has no neuron

CASES: list[Case] = [
    # ---------------------------------------------------------------- corpora: JSONL
    api("jsonl-text-null", lambda e: Corpus.from_jsonl(e.write("c.jsonl", '{"lang": "en", "text": "ok"}\n{"lang": "en", "text": null}\n')),
        ValueError, r"c\.jsonl:2: .*\"text\" must be a string.*null"),
    api("jsonl-text-number", lambda e: Corpus.from_jsonl(e.write("c.jsonl", '{"lang": "en", "text": 12345}\n')),
        ValueError, r"c\.jsonl:1: .*\"text\" must be a string.*12345"),
    api("jsonl-text-list", lambda e: Corpus.from_jsonl(e.write("c.jsonl", '{"lang": "en", "text": ["a"]}\n')),
        ValueError, r"c\.jsonl:1: .*\"text\" must be a string"),
    api("jsonl-lang-null", lambda e: Corpus.from_jsonl(e.write("c.jsonl", '{"lang": null, "text": "hello"}\n')),
        ValueError, r"c\.jsonl:1: .*\"lang\" must be a language code"),
    api("jsonl-lang-number", lambda e: Corpus.from_jsonl(e.write("c.jsonl", '{"lang": 7, "text": "hello"}\n')),
        ValueError, r"c\.jsonl:1: .*\"lang\" must be a language code"),
    api("jsonl-lang-missing", lambda e: Corpus.from_jsonl(e.write("c.jsonl", '{"text": "hello"}\n')),
        ValueError, r"c\.jsonl:1: .*\"lang\""),
    api("jsonl-text-missing", lambda e: Corpus.from_jsonl(e.write("c.jsonl", '{"lang": "en"}\n')),
        ValueError, r"c\.jsonl:1: .*\"text\""),
    api("jsonl-not-an-object", lambda e: Corpus.from_jsonl(e.write("c.jsonl", '["en", "hello"]\n')),
        ValueError, r"c\.jsonl:1: expected a JSON object"),
    api("jsonl-invalid-json", lambda e: Corpus.from_jsonl(e.write("c.jsonl", '{"lang": "en", "text": "a"}\n{"lang": \n')),
        ValueError, r"c\.jsonl:2: expected a JSON object"),
    api("jsonl-bad-split", lambda e: Corpus.from_jsonl(e.write("c.jsonl", '{"lang": "en", "text": "a", "split": "train"}\n')),
        ValueError, r"c\.jsonl:1: split must be"),
    api("jsonl-not-utf8", lambda e: Corpus.from_jsonl(e.write("c.jsonl", b'{"lang": "en", "text": "a"}\n{"lang": "de", "text": "K\xe4se"}\n')),
        ValueError, r"c\.jsonl:2: .*not UTF-8"),
    api("jsonl-duplicate-id", lambda e: Corpus.from_jsonl(e.write("c.jsonl", '{"lang": "en", "text": "a", "id": 1}\n{"lang": "en", "text": "b", "id": 1}\n')),
        ValueError, r"c\.jsonl:2: .*id 1 .*twice.*'en'.*line 1"),
    api("jsonl-empty", lambda e: Corpus.from_jsonl(e.write("c.jsonl", "\n\n")), ValueError, r"holds no texts"),
    api("jsonl-missing-file", lambda e: Corpus.from_jsonl(e.tmp / "none.jsonl"), ValueError, r"none\.jsonl is not a file"),
    api("jsonl-unknown-language-asked", lambda e: Corpus.from_jsonl(e.write("c.jsonl", '{"lang": "en", "text": "a"}\n'), languages=["en", "xx"]),
        ValueError, r"has no text for \['xx'\]"),
    # ---------------------------------------------------------------- corpora: text folders, saved corpora
    api("textdir-not-utf8", lambda e: Corpus.from_text_dir((e.write("t/en.txt", "one\ntwo\n"), e.write("t/de.txt", b"eins\nzwei\ndrei \xff\n"))[0].parent),
        ValueError, r"de\.txt:3: .*not UTF-8"),
    api("textdir-empty-folder", lambda e: Corpus.from_text_dir((e.tmp / "t").mkdir() or e.tmp / "t"),
        ValueError, r"has no <lang>\.txt files"),
    api("textdir-not-a-folder", lambda e: Corpus.from_text_dir(e.a_file()), ValueError, r"is not a folder of <lang>\.txt"),
    api("textdir-missing-language", lambda e: Corpus.from_text_dir(e.s / "texts", languages=["en", "fr"]),
        ValueError, r"has no fr\.txt"),
    api("textdir-blank-file", lambda e: Corpus.from_text_dir((e.write("t/en.txt", "one\n"), e.write("t/de.txt", "\n \n"))[0].parent),
        ValueError, r"no text for language\(s\) \['de'\]"),
    api("corpus-duplicate-languages", lambda e: Corpus(["en", "en"], {"en": ["a"]}, {"en": []}),
        ValueError, r"'en' is given twice"),
    api("corpus-no-language", lambda e: Corpus([], {}, {}), ValueError, r"at least one language"),
    api("corpus-parallel-unequal", lambda e: Corpus(["en", "de"], {"en": ["a", "b"], "de": ["c"]}, {"en": [], "de": []}, parallel=True),
        ValueError, r"unequal stats lengths"),
    api("load-corpus-unknown-language-code", lambda e: load_corpus("libreoffice:en,xx", progress=False),
        ValueError, r"'xx'"),
    api("load-corpus-empty-folder", lambda e: load_corpus((e.tmp / "t").mkdir() or e.tmp / "t"),
        ValueError, r"holds neither corpus\.json nor <lang>\.txt"),
    api("load-corpus-missing", lambda e: load_corpus(e.tmp / "nowhere"), ValueError, r"cannot load a corpus from"),
    api("corpus-edited-after-save", lambda e: Corpus.load(e.value), ValueError, r"does not match its fingerprint",
        setup=_edited_corpus),
    api("corpus-json-damaged", lambda e: Corpus.load(e.value), ValueError, r"not valid JSON",
        setup=lambda e: setattr(e, "value", (e.copy("corpus"), e.write("corpus/corpus.json", "{"))[0])),
    api("corpus-save-over-user-folder", lambda e: e.corpus.save(e.user_folder()), ValueError, r"did not write"),
    api("corpus-subset-unknown", lambda e: e.corpus.subset(["en", "xx"]), ValueError, r"\['xx'\] not in this corpus"),
    # ---------------------------------------------------------------- stats files
    api("stats-languages-reordered", lambda e: ActivationStats.load(e.edit_stats_json(lambda d: d["languages"].reverse())),
        ValueError, r"lists the languages .* but the tensors are for"),
    api("stats-newer-format", lambda e: ActivationStats.load(e.edit_stats_json(lambda d: d.update(format_version=99))),
        ValueError, r"newer steer .*upgrade steer"),
    api("stats-no-format-version", lambda e: ActivationStats.load(e.edit_stats_json(lambda d: d.update(format_version="x"))),
        ValueError, r"no valid format version"),
    api("stats-truncated", lambda e: ActivationStats.load(_truncate(e)), ValueError, r"damaged or truncated"),
    api("stats-empty-file", lambda e: ActivationStats.load(_truncate(e, 0)), ValueError, r"damaged or truncated"),
    api("stats-json-invalid", lambda e: ActivationStats.load((e.copy("stats"), e.write("stats/stats.json", "{"))[0]),
        ValueError, r"stats\.json' is not valid JSON"),
    api("stats-nan-sums-on-load", lambda e: ActivationStats.load(_stats_with_nan(e)), ValueError, r"non-finite"),
    api("stats-missing-folder", lambda e: ActivationStats.load(e.tmp / "nowhere"), ValueError, r"run `steer collect` first"),
    api("stats-not-a-stats-file", lambda e: ActivationStats.load_file(e.write("x.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")),
        ValueError, r"not a steer stats file|damaged"),
    api("stats-for-another-model", lambda e: ActivationStats.load(e.s / "llama_stats", model=e.tiny),
        ValueError, r"3 layers .* but 'gemma3-seed0' has 4 .*use files made for this model"),
    api("stats-save-into-a-file", lambda e: e.stats.save(e.a_file()), ValueError, r"is a file; path must be a folder"),
    api("stats-nan-sums", lambda e: ActivationStats(["en"], torch.zeros(1, 1, 2), torch.tensor([1]), torch.tensor([[[float("nan"), 0.0]]])),
        ValueError, r"sums holds 1 non-finite"),
    api("stats-active-over-tokens", lambda e: ActivationStats(["en"], torch.full((1, 1, 2), 5), torch.tensor([3])),
        ValueError, r"active > tokens"),
    api("from-counts-negative", lambda e: ActivationStats.from_counts(["en"], torch.full((1, 1, 2), -1), torch.tensor([3])),
        ValueError, r"non-negative"),
    warns("from-counts-clips-excess", lambda e: ActivationStats.from_counts(["en", "de"], torch.tensor([[[4, 1]], [[0, 2]]]), torch.tensor([3, 3])),
          UserWarning, r"1 neuron counts exceed .*by up to 1 tokens.*clipped"),
    api("stats-duplicate-languages", lambda e: ActivationStats(["en", "en"], torch.zeros(2, 1, 1), torch.ones(2)),
        ValueError, r"'en' is given twice"),
    api("stats-merge-other-shape", lambda e: e.stats.merge(ActivationStats.load(e.s / "llama_stats")),
        ValueError, r"different shapes"),
    api("stats-unknown-language", lambda e: e.stats.index("xx"), ValueError, r"'xx' is not in these stats"),
    # ---------------------------------------------------------------- collect
    api("collect-unknown-language", lambda e: steer.collect(e.tiny, e.corpus, languages=["en", "xx"], progress=False),
        ValueError, r"no language \['xx'\]"),
    api("collect-language-without-tokens", lambda e: steer.collect(e.tiny, {"en": ["Hello there"], "de": []}, progress=False),
        ValueError, r"no tokens to count for 'de'"),
    api("collect-max-tokens-zero", lambda e: steer.collect(e.tiny, e.corpus, max_tokens_per_language=0, progress=False),
        ValueError, r"max_tokens_per_language must be a positive number"),
    api("collect-max-tokens-negative", lambda e: steer.collect(e.tiny, e.corpus, max_tokens_per_language=-5, progress=False),
        ValueError, r"max_tokens_per_language must be a positive number.*-5"),
    api("collect-batch-size-zero", lambda e: steer.collect(e.tiny, e.corpus, batch_size=0, progress=False),
        ValueError, r"batch_size must be at least 1"),
    api("collect-tokens-per-batch-zero", lambda e: steer.collect(e.tiny, e.corpus, tokens_per_batch=0, progress=False),
        ValueError, r"tokens_per_batch must be between 1"),
    api("collect-max-length-one", lambda e: steer.collect(e.tiny, e.corpus, max_length=1, progress=False),
        ValueError, r"max_length must be at least 2"),
    api("collect-checkpoint-every-zero", lambda e: steer.collect(e.tiny, e.corpus, checkpoint=e.tmp / "ck", checkpoint_every=0, progress=False),
        ValueError, r"checkpoint_every must be at least 1"),
    api("collect-languages-as-a-string", lambda e: steer.collect(e.tiny, e.corpus, languages="xx", progress=False),
        ValueError, r"no language \['xx'\]"),
    api("collect-unknown-split", lambda e: steer.collect(e.tiny, e.corpus, split="train", progress=False),
        ValueError, r"split must be 'stats' or 'eval'"),
    api("collect-resume-sq-sums-after-run-without", lambda e: steer.collect(e.tiny, e.value, batch_size=1, checkpoint=e.tmp / "ck", sq_sums=True, progress=False),
        ValueError, r"without sq_sums.*rerun without sq_sums", setup=_collect_checkpoint),
    api("collect-resume-other-plan", lambda e: steer.collect(e.tiny, e.value, batch_size=1, max_length=8, checkpoint=e.tmp / "ck", progress=False),
        ValueError, r"does not match this run \(changed: batching or token settings; batch plan\)", setup=_collect_checkpoint),
    api("collect-damaged-checkpoint", lambda e: steer.collect(e.tiny, e.value, batch_size=1, checkpoint=e.tmp / "ck", progress=False),
        ValueError, r"rank0\.safetensors.*damaged or truncated",
        setup=lambda e: (_collect_checkpoint(e), checkpoint_file(e.tmp / "ck").write_bytes(b"\x00" * 12))),
    api("checkpoint-kill-between-writes", _killed_checkpoint_write, KeyboardInterrupt, None, setup=_first_checkpoint,
        check=lambda e: ActivationStats.load_file(checkpoint_file(e.tmp / "ck")).meta["done_batches"] == 3),
    # ---------------------------------------------------------------- identify
    api("identify-unknown-method", lambda e: steer.identify(e.stats, method="magic"), ValueError, r"unknown method 'magic'.*lape"),
    api("identify-lambda-abc", lambda e: steer.identify(e.stats, method="zhang2025", **{"lambda": "abc"}),
        ValueError, r"lambda must be a number or 'auto', got 'abc'"),
    api("identify-lambda-nan", lambda e: steer.identify(e.stats, **{"lambda": float("nan")}), ValueError, r"lambda must be a finite"),
    api("identify-lambda-for-lape", lambda e: steer.identify(e.stats, method="lape", **{"lambda": 0.1}),
        ValueError, r"method 'lape' takes no parameter 'lambda'.*top_rate, filter_rate, activation_bar_ratio"),
    api("identify-lambda-for-specificity", lambda e: steer.identify(e.stats, method="specificity", **{"lambda": 0.1}),
        ValueError, r"method 'specificity' takes no parameter 'lambda'.*top_rate, n_per_language"),
    api("identify-unknown-keyword-lape", lambda e: steer.identify(e.stats, method="lape", top_k=5),
        ValueError, r"method 'lape' takes no parameter 'top_k'"),
    api("identify-unknown-keyword-zhang", lambda e: steer.identify(e.stats, method="zhang2025", topk=5),
        ValueError, r"method 'zhang2025' takes no parameter 'topk'.*top_rate, threshold_ratio, lambda"),
    api("identify-filter-rate-for-zhang", lambda e: steer.identify(e.stats, method="zhang2025", filter_rate=0.9),
        ValueError, r"method 'zhang2025' takes no parameter 'filter_rate'"),
    api("identify-top-rate-zero", lambda e: steer.identify(e.stats, top_rate=0), ValueError, r"top_rate must be in \(0, 1\], got 0"),
    api("identify-top-rate-above-one", lambda e: steer.identify(e.stats, method="lape", top_rate=1.5), ValueError, r"top_rate must be in \(0, 1\]"),
    api("identify-top-rate-string", lambda e: steer.identify(e.stats, top_rate="0.1"), ValueError, r"top_rate must be in \(0, 1\]"),
    api("identify-top-rate-bool", lambda e: steer.identify(e.stats, top_rate=True), ValueError, r"top_rate must be in \(0, 1\], got True"),
    api("identify-n-per-language-zero", lambda e: steer.identify(e.stats, method="specificity", n_per_language=0),
        ValueError, r"n_per_language must be a whole number of at least 1"),
    api("identify-one-language", lambda e: steer.identify(ActivationStats(["en"], torch.zeros(1, 2, 3), torch.tensor([5]))),
        ValueError, r"at least two languages"),
    api("identify-no-tokens", lambda e: steer.identify(ActivationStats(["en", "de"], torch.zeros(2, 2, 3), torch.zeros(2))),
        ValueError, r"count no tokens"),
    api("identify-language-with-zero-tokens", lambda e: steer.identify(ActivationStats.load(e.s / "zero_de_stats")),
        ValueError, r"no tokens for 'de'"),
    # ---------------------------------------------------------------- neuron files and sets
    api("neurons-index-minus-one", lambda e: NeuronSet.load(e.edit_json("neurons.json", lambda d: d["neurons"]["en"][0].append(-1))),
        ValueError, r"language 'en', layer 0: a neuron index is outside 0\.\.127"),
    api("neurons-index-float", lambda e: NeuronSet.load(e.edit_json("neurons.json", lambda d: d["neurons"]["de"][1].append(1.7))),
        ValueError, r"language 'de', layer 1: neuron indices must be integers"),
    api("neurons-missing-d-mlp", lambda e: NeuronSet.load(e.edit_json("neurons.json", lambda d: d.pop("d_mlp"))),
        ValueError, r"it has no 'd_mlp'"),
    api("neurons-missing-language-entry", lambda e: NeuronSet.load(e.edit_json("neurons.json", lambda d: d["neurons"].pop("ja"))),
        ValueError, r"no neuron entry for the language\(s\) \['ja'\]"),
    api("neurons-general-out-of-range", lambda e: NeuronSet.load(e.edit_json("neurons.json", lambda d: d["general"][2].append(128))),
        ValueError, r"'general', layer 2: a neuron index is outside"),
    api("neurons-newer-format", lambda e: NeuronSet.load(e.edit_json("neurons.json", lambda d: d.update(format="steer.NeuronSet/9"))),
        ValueError, r"newer format .*upgrade steer"),
    api("neurons-not-a-neuron-set", lambda e: NeuronSet.load(e.edit_json("neurons.json", lambda d: d.pop("format"))),
        ValueError, r"is not a steer neuron set"),
    api("neurons-wrong-layer-count", lambda e: NeuronSet.load(e.edit_json("neurons.json", lambda d: d["neurons"]["en"].pop())),
        ValueError, r"language 'en' must list 4 layers"),
    api("neurons-n-layers-string", lambda e: NeuronSet.load(e.edit_json("neurons.json", lambda d: d.update(n_layers="4"))),
        ValueError, r"'n_layers' must be a positive integer"),
    api("neurons-not-json", lambda e: NeuronSet.load(e.write("n.json", "{not json")), ValueError, r"cannot read neuron set"),
    api("neurons-folder-without-file", lambda e: NeuronSet.load(e.user_folder()), ValueError, r"holds no neurons\.json"),
    fine("neurons-load-folder-written-by-identify-out", lambda e: setattr(e, "value", NeuronSet.load(e.tmp)),
         setup=lambda e: e.copy("neurons.json"), check=lambda e: e.value.languages == ["en", "de", "ja"]),
    api("neurons-for-another-model-shape", lambda e: NeuronSet.load(e.s / "llama_neurons.json", model=e.tiny),
        ValueError, r"3 layers × 128 neurons, but 'gemma3-seed0' has 4 × 128"),
    api("neurons-for-another-model-weights", lambda e: NeuronSet.load(e.s / "lookalike_neurons.json", model=e.tiny),
        ValueError, r"made on weights .*\(llama-lookalike\), not on 'gemma3-seed0'"),
    api("neurons-unknown-language", lambda e: e.neurons["xx"], ValueError, r"unknown language 'xx'; this set has en, de, ja"),
    api("neurons-layer-out-of-range", lambda e: e.neurons.select(layers=[9]), ValueError, r"layers \[9\] out of range 0\.\.3"),
    api("neurons-unknown-class", lambda e: e.neurons.select(classes=["special"]), ValueError, r"unknown class 'special'"),
    api("neurons-duplicate-languages", lambda e: NeuronSet(["en", "en"], torch.zeros(2, 1, 1)), ValueError, r"'en' is given twice"),
    api("neurons-membership-shape", lambda e: NeuronSet(["en"], torch.zeros(2, 1)), ValueError, r"membership must be \[lang=1"),
    api("neurons-from-masks-out-of-range", lambda e: NeuronSet.from_masks([[[200]]], ["en"], d_mlp=128),
        ValueError, r"neuron index 200 is out of range for d_mlp=128"),
    api("neurons-from-masks-count", lambda e: NeuronSet.from_masks([[[1]]], ["en", "de"]), ValueError, r"1 masks for 2 languages"),
    api("neurons-without-wrong-shape", lambda e: e.neurons.without(torch.zeros(2, 2, dtype=torch.bool)),
        ValueError, r"positions must be a \[4, 128\] mask"),
    api("neurons-union-other-shape", lambda e: e.neurons | NeuronSet.load(e.s / "llama_neurons.json"),
        ValueError, r"models of different shapes"),
    # ---------------------------------------------------------------- interventions
    api("intervention-unknown-op", lambda e: Intervention("explode"), ValueError, r"unknown op 'explode'"),
    api("intervention-unknown-phase", lambda e: Intervention("suppress", phase="middle"), ValueError, r"unknown phase 'middle'"),
    api("intervention-scale-without-factor", lambda e: Intervention("scale"), ValueError, r"scale needs a finite factor"),
    api("intervention-scale-inf", lambda e: Intervention("scale", factor=float("inf")), ValueError, r"scale needs a finite factor, got inf"),
    api("intervention-value-nan", lambda e: Intervention("suppress", value=float("nan")), ValueError, r"value must be a finite number"),
    api("intervention-set-without-value", lambda e: Intervention("set"), ValueError, r"set needs a constant value or a target"),
    api("intervention-add-without-target", lambda e: Intervention("add"), ValueError, r"add needs a target language"),
    api("intervention-add-unknown-mode", lambda e: Intervention("add", target="de", mode="weird"), ValueError, r"unknown add mode 'weird'"),
    api("intervention-unknown-class", lambda e: Intervention("suppress", classes=["bogus"]), ValueError, r"unknown class 'bogus'"),
    api("intervention-from-dict-unknown-key", lambda e: Intervention.from_dict({"op": "suppress", "strength": 2}),
        ValueError, r"unknown Intervention field 'strength'.*op, languages"),
    api("deactivate-language-with-no-neuron", lambda e: steer.deactivate(e.tiny, NeuronSet.load(e.s / "sparse.json")["de"]),
        ValueError, ZERO_NEURONS),
    api("amplify-language-with-no-neuron", lambda e: steer.amplify(e.tiny, NeuronSet.load(e.s / "sparse.json")["de"]),
        ValueError, ZERO_NEURONS),
    api("intervene-language-with-no-neuron", lambda e: steer.intervene(e.tiny, Intervention("suppress", languages=["de"]), neurons=NeuronSet.load(e.s / "sparse.json")),
        ValueError, ZERO_NEURONS),
    fine("deactivate-classes-as-a-string", lambda e: steer.deactivate(e.tiny, NeuronSet.load(e.s / "sparse.json")["en"], classes="specific")),
    api("intervene-without-neurons", lambda e: steer.intervene(e.tiny, Intervention("suppress"), neurons=None), ValueError, r"need a NeuronSet"),
    api("intervene-nothing", lambda e: Steering(e.tiny, [], e.neurons),
        ValueError, r"no interventions given"),
    api("intervene-target-without-stats", lambda e: steer.intervene(e.tiny, Intervention("add", languages=["en"], target="en"), neurons=NeuronSet.load(e.s / "sparse.json")),
        ValueError, r"needs ActivationStats"),
    api("intervene-target-not-in-stats", lambda e: steer.intervene(e.tiny, Intervention("add", languages=["en"], target="fr"), neurons=NeuronSet.load(e.s / "sparse.json"), stats=e.stats),
        ValueError, r"'fr' is not in these stats"),
    api("intervene-stats-for-another-model", lambda e: steer.intervene(e.tiny, Intervention("add", languages=["en"], target="en"), neurons=NeuronSet.load(e.s / "sparse.json"), stats=ActivationStats.load(e.s / "llama_stats")),
        ValueError, r"activation stats is for a model with 3 layers"),
    api("deactivate-neurons-for-another-model", lambda e: steer.deactivate(e.tiny, NeuronSet.load(e.s / "llama_neurons.json")),
        ValueError, r"use files made for this model"),
    api("steering-applied-twice", _second_steering, RuntimeError, r"already applied"),
    # ---------------------------------------------------------------- generate
    api("generate-no-prompt", lambda e: steer.generate(e.tiny, []), ValueError, r"prompts must be a non-empty list"),
    api("generate-empty-prompt", lambda e: steer.generate(e.tiny, [""]), ValueError, r"non-empty strings"),
    api("generate-max-new-tokens-zero", lambda e: steer.generate(e.tiny, "Hi", max_new_tokens=0), ValueError, r"max_new_tokens .* at least 1"),
    api("generate-batch-size-zero", lambda e: steer.generate(e.tiny, "Hi", batch_size=0), ValueError, r"batch_size must be at least 1"),
    api("generate-force-without-neurons", lambda e: steer.generate(e.tiny, "Hi", force_language="de"), ValueError, r"force_language needs stats"),
    api("generate-force-unknown-language", lambda e: steer.generate(e.tiny, "Hi", force_language="fr", neurons=e.neurons, stats=e.stats),
        ValueError, r"unknown language 'fr'"),
    api("generate-unknown-mode", lambda e: steer.generate(e.tiny, "Hi", force_language="de", neurons=e.neurons, stats=e.stats, mode="loud"),
        ValueError, r"unknown force mode 'loud'"),
    api("generate-std-without-sq-sums", lambda e: steer.generate(e.tiny, "Hi", force_language="de", stats=e.stats, mode="std"),
        ValueError, r"no sq_sums; collect them with steer.collect\(\.\.\., sq_sums=True\)"),
    api("generate-mode-without-force", lambda e: steer.generate(e.tiny, "Hi", mode="additive"), ValueError, r"mode .*only with force_language"),
    api("generate-strength-without-force", lambda e: steer.generate(e.tiny, "Hi", strength=2.0), ValueError, r"strength .*only with force_language"),
    api("generate-steps-without-force", lambda e: steer.generate(e.tiny, "Hi", steps=2), ValueError, r"steps .*only with force_language"),
    api("generate-steps-negative", lambda e: steer.generate(e.tiny, "Hi", force_language="de", stats=e.stats, steps=-1),
        ValueError, r"steps must be a whole number of at least 1, or None for every step, got -1"),
    api("generate-steps-zero-is-not-every-step", lambda e: steer.generate(e.tiny, "Hi", force_language="de", stats=e.stats, steps=0),
        ValueError, r"got 0 \(0 no longer means every step: pass None, or 'all' on a command line\)"),
    api("intervention-steps-fraction", lambda e: steer.Intervention("suppress", steps=1.5), ValueError, r"steps must be a whole number of at least 1"),
    api("generate-strength-nan", lambda e: steer.generate(e.tiny, "Hi", force_language="de", neurons=e.neurons, stats=e.stats, mode="diffmean", strength=float("nan")),
        ValueError, r"strength must be a finite number, got nan"),
    api("generate-corpus-with-a-rule", lambda e: steer.generate(e.tiny, "Hi", force_language="de", neurons=e.neurons, stats=e.stats, mode="diffmean", corpus=e.corpus),
        ValueError, r"corpus \(--corpus\) is what a learned push is fitted on"),
    api("generate-learned-push-strength-nan", lambda e: steer.generate(e.tiny, "Hi", force_language="de", neurons=e.neurons, stats=e.stats, strength=float("nan")),
        ValueError, r"strength must be a finite number \(it scales the push\), got nan"),
    api("generate-interrupted-resets-prompt-boundary", _interrupted_generate, None, None),
    # ---------------------------------------------------------------- models
    api("load-model-dtype-float8", lambda e: steer.load_model(e.tiny_dir, dtype="float8"), ValueError, r"unknown dtype 'float8'"),
    api("load-model-unknown-device", lambda e: steer.load_model(e.tiny_dir, device="tpu9"), ValueError, r"unknown device 'tpu9'"),
    api("load-model-unknown-name", lambda e: steer.load_model("no-such-model"), ValueError, r"unknown model 'no-such-model'"),
    api("load-model-folder-without-config", lambda e: steer.load_model(e.user_folder()), ValueError, r"not a model folder \(no config\.json\)"),
    # ---------------------------------------------------------------- writers never delete what they did not write
    api("json-writer-refuses-a-folder", lambda e: write_json_atomic(e.user_folder(), {}), ValueError, r"is a folder; give a file path"),
    api("folder-writer-refuses-a-user-folder", lambda e: atomic_dir(e.user_folder(), "made.json").__enter__(), ValueError, r"did not write"),
    api("atomic-file-interrupted-keeps-the-old-file", lambda e: _interrupted_atomic_write(e), KeyboardInterrupt, None,
        setup=lambda e: e.write("kept.json", '{"old": true}')),
    # ---------------------------------------------------------------- ablate (API)
    api("ablate-language-with-no-neuron", lambda e: ablate_language(e.tiny, NeuronSet.load(e.s / "sparse.json"), e.corpus, "de", n_texts=1),
        ValueError, ZERO_NEURONS),
    api("ablate-n-texts-negative", lambda e: ablate_language(e.tiny, NeuronSet.load(e.s / "sparse.json"), e.corpus, "en", n_texts=-3),
        ValueError, r"n_texts must be at least 1, got -3"),
    api("ablate-no-class", lambda e: ablate_language(e.tiny, NeuronSet.load(e.s / "sparse.json"), e.corpus, "en", classes=[]),
        ValueError, r"classes is empty"),
    # ---------------------------------------------------------------- bench configs
    api("toml-unknown-key", lambda e: _toml(e, GOOD_TOML + "foo = 1\n"), ValueError, r"\[bench\.delta_ppl\]: unknown key 'foo'"),
    api("toml-wrong-type", lambda e: _toml(e, GOOD_TOML + 'n_random = "3"\n'), ValueError, r"'n_random' must be an integer"),
    api("toml-unknown-section", lambda e: _toml(e, GOOD_TOML + "[extra]\n"), ValueError, r"unknown section 'extra'"),
    api("toml-unknown-benchmark", lambda e: _toml(e, GOOD_TOML + "[bench.speed]\n"), ValueError, r"unknown benchmark \[bench\.speed\]"),
    api("toml-unknown-neuron-set", lambda e: _toml(e, GOOD_TOML + 'neurons = "nope"\n'), ValueError, r"unknown neuron set 'nope'"),
    api("toml-unknown-method", lambda e: _toml(e, GOOD_TOML.replace('"zhang2025"', '"magic"')), ValueError, r"unknown method 'magic'"),
    api("toml-method-and-path", lambda e: _toml(e, GOOD_TOML.replace('method = "zhang2025"', 'method = "lape"\npath = "x.json"')),
        ValueError, r"either method"),
    api("toml-method-parameter-it-does-not-take", lambda e: _toml(e, GOOD_TOML.replace('method = "zhang2025"', 'method = "lape"\nlambda = 0.1')),
        ValueError, r"\[neurons\.z\]: method 'lape' takes no parameter 'lambda'"),
    api("toml-invalid", lambda e: _toml(e, "[corpus\n"), ValueError, r"not valid TOML"),
    api("toml-no-neuron-set", lambda e: _toml(e, "[corpus]\n"), ValueError, r"at least one neuron set"),
    api("toml-dtype-float8", lambda e: _toml(e, GOOD_TOML + '[model]\ndtype = "float8"\n'), ValueError, r"dtype must be auto"),
    api("toml-n-eval-zero", lambda e: _toml(e, GOOD_TOML.replace("[corpus]\n", "[corpus]\nn_eval = 0\n")), ValueError, r"n_eval must be at least 1"),
    api("toml-stats-batch-size-zero", lambda e: _toml(e, GOOD_TOML + "[stats]\nbatch_size = 0\n"), ValueError, r"\[stats\]: batch_size must be at least 1"),
    api("toml-stats-max-tokens-zero", lambda e: _toml(e, GOOD_TOML + "[stats]\nmax_tokens_per_language = 0\n"), ValueError, r"max_tokens_per_language must be positive"),
    api("toml-delta-ppl-n-texts-negative", lambda e: _toml(e, GOOD_TOML + "n_texts = -3\n"), ValueError, r"\[bench\.delta_ppl\]: n_texts must be at least 1"),
    api("toml-delta-ppl-n-random-negative", lambda e: _toml(e, GOOD_TOML + "n_random = -1\n"), ValueError, r"n_random must be at least 0"),
    api("toml-forced-unknown-mode", lambda e: _toml(e, GOOD_TOML + '[bench.forced]\nmode = "loud"\n'), ValueError, r"unknown force mode 'loud'"),
    api("toml-forced-negative-steps", lambda e: _toml(e, GOOD_TOML + '[bench.forced]\nsteps = -2\n'), ValueError, r"steps must be a whole number of at least 1, or None for every step, got -2"),
    api("toml-forced-steps-word", lambda e: _toml(e, GOOD_TOML + '[bench.forced]\nsteps = "some"\n'), ValueError, r"steps must be a whole number of new tokens to force, or 'all', got 'some'"),
    fine("toml-forced-steps-all", lambda e: setattr(e, "value", _toml(e, GOOD_TOML + '[bench.forced]\nsteps = "all"\n')),
         check=lambda e: e.value.benchmarks[-1].spec.steps == "all"),
    api("toml-transfer-batch-size-zero", lambda e: _toml(e, GOOD_TOML + "[bench.transfer]\nbatch_size = 0\n"), ValueError, r"\[bench\.transfer\]: batch_size must be at least 1"),
    api("toml-duplicate-languages", lambda e: _toml(e, GOOD_TOML.replace('["en", "de"]', '["en", "de", "en"]')),
        ValueError, r"\[corpus\]: 'languages': 'en' is given twice"),
    api("toml-duplicate-names", lambda e: _toml(e, GOOD_TOML + '[[bench.layers]]\nname = "delta_ppl"\n'), ValueError, r"two benchmarks are named 'delta_ppl'"),
    api("toml-missing-file", lambda e: load_config(e.tmp / "none.toml"), ValueError, r"cannot read config"),
    api("run-bench-out-is-a-file", lambda e: run_bench(e.s / "bench.toml", e.a_file(), progress=False), ValueError, r"'.*taken' is a file"),
    api("run-demo-out-is-a-file", lambda e: run_demo(e.a_file(), quick=True, model=e.tiny_dir, progress=False), ValueError, r"'.*taken' is a file"),
    api("run-bench-threads-zero", lambda e: run_bench(e.s / "bench.toml", e.out, progress=False, threads=0),
        ValueError, r"threads must be at least 1, got 0"),
    warns("demo-without-low-resource-language-skips-transfer",
          lambda e: setattr(e, "value", _skip_transfer_without_low_resource(demo_config(quick=True, languages=["en", "de"]), None)),
          UserWarning, r"no low-resource language \(.*\) among en, de: the demo skips the low-resource transfer",
          check=lambda e: e.value == ["transfer"]),
    api("run-demo-unknown-knob", lambda e: run_demo(e.out, quick=True, model=e.tiny_dir, n_texts=3, progress=False), ValueError, r"unknown demo knob 'n_texts'"),
    # ---------------------------------------------------------------- align (API)
    api("align-steps-zero", lambda e: align(e.tiny_dir, e.s / "texts", e.out, AlignConfig(["de"], steps=0), progress=False),
        ValueError, r"steps must be at least 1 \(got 0\)"),
    api("align-out-is-a-user-folder", lambda e: align(e.tiny_dir, e.s / "texts", e.user_folder(), AlignConfig(["de"], steps=1), progress=False),
        ValueError, r"is a folder steer did not write \(it holds notes\.txt\)"),
    api("align-out-is-a-file", lambda e: align(e.tiny_dir, e.s / "texts", e.a_file(), AlignConfig(["de"], steps=1), progress=False),
        ValueError, r"'.*taken' is a file; out must be a folder"),
    api("align-unknown-train-language", lambda e: align(e.tiny_dir, e.s / "texts", e.out, AlignConfig(["xx"], steps=1), progress=False),
        ValueError, r"train language\(s\) \['xx'\] not in the corpus"),
    # ================================================================ the command line
    # ---- corpus build
    cli("cli-corpus-from-dir-not-utf8", lambda e: CORPUS(e, "--from-dir", e.write("t/en.txt", b"ok\n\xc3(\n").parent), r"en\.txt:2: .*not UTF-8"),
    cli("cli-corpus-jsonl-text-null", lambda e: CORPUS(e, "--jsonl", e.write("c.jsonl", '{"lang": "en", "text": null}\n')), r"c\.jsonl:1: .*\"text\" must be a string"),
    cli("cli-corpus-from-dir-and-jsonl", lambda e: CORPUS(e, "--from-dir", e.s / "texts", "--jsonl", e.tmp / "c.jsonl"), r"not allowed with argument", usage=True),
    cli("cli-corpus-n-eval-zero", lambda e: CORPUS(e, "--n-eval", "0"), r"--n-eval: must be a positive integer, got '0'", usage=True),
    cli("cli-corpus-min-chars-negative", lambda e: CORPUS(e, "--min-chars", "-1"), r"--min-chars: must be a positive integer", usage=True),
    cli("cli-corpus-min-chars-with-from-dir", lambda e: CORPUS(e, "--from-dir", e.s / "texts", "--min-chars", "10"), r"--min-chars and --n-eval .*LibreOffice"),
    cli("cli-corpus-unknown-language", lambda e: CORPUS(e, "--languages", "en,xx"), r"'xx'"),
    cli("cli-corpus-empty-folder", lambda e: CORPUS(e, "--from-dir", (e.tmp / "t").mkdir() or e.tmp / "t"), r"has no <lang>\.txt files"),
    cli("cli-corpus-out-is-a-file-checked-before-building", lambda e: CORPUS(e, "--languages", "en,de", "--out", e.a_file()),
        r"is a file; --out must be a folder", setup=lambda e: e.mp.setattr(steer.corpus, "build_libreoffice", _no_build)),
    cli("cli-corpus-out-is-a-user-folder", lambda e: _s("corpus", "build", "--from-dir", e.s / "texts", "--out", e.user_folder()), r"did not write"),
    # ---- collect
    cli("cli-collect-out-is-a-file", lambda e: COLLECT(e, "--out", e.a_file()), r"is a file; --out must be a folder"),
    cli("cli-collect-batch-size-zero", lambda e: COLLECT(e, "--batch-size", "0"), r"--batch-size: must be a positive integer", usage=True),
    cli("cli-collect-tokens-per-batch-negative", lambda e: COLLECT(e, "--tokens-per-batch", "-8"), r"--tokens-per-batch: must be a positive integer", usage=True),
    cli("cli-collect-max-length-zero", lambda e: COLLECT(e, "--max-length", "0"), r"--max-length: must be a positive integer", usage=True),
    cli("cli-collect-max-tokens-zero", lambda e: COLLECT(e, "--max-tokens-per-language", "0"), r"--max-tokens-per-language: must be a positive integer", usage=True),
    cli("cli-collect-batch-size-text", lambda e: COLLECT(e, "--batch-size", "many"), r"--batch-size: must be a positive integer, got 'many'", usage=True),
    cli("cli-collect-unknown-language", lambda e: COLLECT(e, "--languages", "en,xx"), r"--languages: the corpus has no language \['xx'\]"),
    cli("cli-collect-missing-corpus", lambda e: COLLECT(e, "--corpus", e.tmp / "nowhere"), r"cannot load a corpus from"),
    cli("cli-collect-unknown-model", lambda e: COLLECT(e, "--model", "no-such-model"), r"unknown model 'no-such-model'"),
    cli("cli-collect-dtype-float8", lambda e: COLLECT(e, "--dtype", "float8"), r"unknown dtype 'float8'"),
    cli("cli-collect-unknown-device", lambda e: COLLECT(e, "--device", "tpu9"), r"unknown device 'tpu9'"),
    Case("cli-collect-clears-checkpoint-and-done-batches", lambda e: COLLECT(e, "--corpus", e.tmp / "small", "--batch-size", "2"), None, None,
         cli=True, setup=_two_language_texts, loads=True, writes=True, check=_no_done_batches, exit_code=0),
    # ---- identify
    cli("cli-identify-lambda-abc", lambda e: IDENTIFY(e, "--lambda", "abc"), r"lambda must be a number or 'auto', got 'abc'"),
    cli("cli-identify-lambda-with-lape", lambda e: IDENTIFY(e, "--method", "lape", "--lambda", "0.1"), r"method 'lape' takes no parameter 'lambda'.*top_rate"),
    cli("cli-identify-lambda-with-specificity", lambda e: IDENTIFY(e, "--method", "specificity", "--lambda", "auto"), r"method 'specificity' takes no parameter 'lambda'"),
    cli("cli-identify-top-rate-zero", lambda e: IDENTIFY(e, "--top-rate", "0"), r"top_rate must be in \(0, 1\]"),
    cli("cli-identify-top-rate-text", lambda e: IDENTIFY(e, "--top-rate", "lots"), r"--top-rate: invalid float value", usage=True),
    cli("cli-identify-unknown-method", lambda e: IDENTIFY(e, "--method", "magic"), r"--method: invalid choice: 'magic'", usage=True),
    cli("cli-identify-zero-token-language", lambda e: IDENTIFY(e, stats=e.s / "zero_de_stats"), r"no tokens for 'de'"),
    cli("cli-identify-missing-stats", lambda e: IDENTIFY(e, stats=e.tmp / "nowhere"), r"run `steer collect` first"),
    cli("cli-identify-damaged-stats", lambda e: IDENTIFY(e, stats=_truncate(e)), r"damaged or truncated"),
    cli("cli-identify-out-user-folder-refused", lambda e: IDENTIFY(e, "--out", e.user_folder()), r"'.*mine' is a folder steer did not write \(it holds notes\.txt\)"),
    Case("cli-identify-out-new-folder-gets-neurons-json", lambda e: IDENTIFY(e, "--out", e.tmp / "nset"), None, None, cli=True,
         writes=True, exit_code=0, check=lambda e: NeuronSet.load(e.tmp / "nset").languages == ["en", "de", "ja"]),
    Case("cli-interrupt-message-is-honest", _interrupt_identify, None, r"steer: interrupted; .*rerun the same command", cli=True, exit_code=130),
    # ---- ablate
    cli("cli-ablate-n-texts-negative", lambda e: ABLATE(e, "--n-texts", "-3"), r"--n-texts: must be a positive integer, got '-3'", usage=True),
    cli("cli-ablate-n-texts-zero", lambda e: ABLATE(e, "--n-texts", "0"), r"--n-texts: must be a positive integer", usage=True),
    cli("cli-ablate-out-is-a-file", lambda e: ABLATE(e, "--out", e.a_file()), r"is a file; --out must be a folder"),
    cli("cli-ablate-missing-neurons", lambda e: ABLATE(e, "--neurons", e.tmp / "none.json"), r"no neuron set at .*none\.json.*no such file"),
    cli("cli-ablate-language-with-no-neuron", lambda e: ABLATE(e, language="de"), ZERO_NEURONS, loads=True),
    cli("cli-ablate-unknown-language", lambda e: ABLATE(e, language="xx"), r"unknown language 'xx'"),
    cli("cli-ablate-unknown-class", lambda e: ABLATE(e, "--classes", "special"), r"unknown class 'special'"),
    cli("cli-ablate-empty-classes", lambda e: ABLATE(e, "--classes", ","), r"classes is empty"),
    cli("cli-ablate-neurons-for-another-model", lambda e: ABLATE(e, neurons="llama_neurons.json"), r"3 layers × 128 neurons, but 'gemma3-seed0' has 4", loads=True),
    # ---- generate
    cli("cli-generate-mode-without-force", lambda e: GENERATE(e, "--mode", "additive"), r"mode .*only with force_language"),
    cli("cli-generate-strength-without-force", lambda e: GENERATE(e, "--strength", "3"), r"strength .*only with force_language"),
    cli("cli-generate-force-without-stats-or-neurons", lambda e: GENERATE(e, "--force-language", "de"), r"force_language needs stats"),
    cli("cli-generate-force-without-stats", lambda e: GENERATE(e, "--force-language", "de", "--mode", "diffmean", "--neurons", e.s / "neurons.json"), r"force_language needs stats \(steer.collect; --stats\)"),
    cli("cli-generate-corpus-with-a-rule", lambda e: FORCE(e, "--corpus", e.s / "corpus"), r"corpus \(--corpus\) is what a learned push is fitted on: it applies only with force_language and neither a mode"),
    cli("cli-generate-corpus-without-force", lambda e: GENERATE(e, "--corpus", e.s / "corpus"), r"corpus \(--corpus\) is what a learned push is fitted on"),
    cli("cli-generate-learned-push-corpus-without-the-target", lambda e: LEARN(e, "--corpus", _corpus_of(e, ["en", "ja"])),
        r"the corpus has only en, ja: pass a corpus with 'de' \(corpus=, --corpus\), or force with a rule"),
    cli("cli-generate-learned-push-unknown-language", lambda e: LEARN(e, "--force-language", "fr"), r"unknown language 'fr'"),
    cli("cli-generate-steps-without-force", lambda e: GENERATE(e, "--steps", "2"), r"steps .*only with force_language"),
    cli("cli-generate-steps-negative", lambda e: FORCE(e, "--steps", "-1"), r"--steps: must be 'all' or a positive integer, got '-1'", usage=True),
    cli("cli-generate-unknown-mode", lambda e: FORCE(e, "--mode", "loud"), r"unknown force mode 'loud'"),
    cli("cli-generate-max-new-tokens-zero", lambda e: GENERATE(e, "--max-new-tokens", "0"), r"--max-new-tokens: must be a positive integer", usage=True),
    cli("cli-generate-empty-prompt", lambda e: _s("generate", "", "--model", e.tiny_dir), r"non-empty strings"),
    cli("cli-generate-out-is-a-file", lambda e: GENERATE(e, "--out", e.a_file()), r"is a file; --out must be a folder"),
    cli("cli-generate-force-unknown-language", lambda e: FORCE(e, "--force-language", "fr"), r"unknown language 'fr'"),
    cli("cli-generate-unknown-suppressed-language", lambda e: FORCE(e, "--suppress", "en,xx"), r"unknown language 'xx'"),
    cli("cli-generate-std-without-sq-sums", lambda e: FORCE(e, "--mode", "std"), r"no sq_sums; collect them with .*--sq-sums"),
    cli("cli-generate-unknown-phase", lambda e: FORCE(e, "--phase", "middle"), r"--phase: invalid choice", usage=True),
    cli("cli-generate-stats-for-another-model", lambda e: FORCE(e, "--stats", e.s / "llama_stats"), r"use files made for this model", loads=True),
    # ---- bench
    cli("cli-bench-out-is-a-file", lambda e: BENCH(e, "--out", e.a_file()), r"is a file; --out must be a folder"),
    cli("cli-bench-threads-zero", lambda e: BENCH(e, "--threads", "0"), r"--threads: must be a positive integer", usage=True),
    cli("cli-bench-unknown-key", lambda e: _s("bench", _bench_config(e, GOOD_TOML + "foo = 1\n"), "--out", e.out), r"unknown key 'foo'"),
    cli("cli-bench-wrong-type", lambda e: _s("bench", _bench_config(e, GOOD_TOML + "max_length = 1.5\n"), "--out", e.out), r"'max_length' must be an integer"),
    cli("cli-bench-missing-config", lambda e: _s("bench", e.tmp / "none.toml", "--out", e.out), r"cannot read config"),
    cli("cli-bench-dtype-float8", lambda e: BENCH(e, "--dtype", "float8"), r"dtype must be auto|unknown dtype 'float8'"),
    # ---- compare
    cli("cli-compare-out-is-a-file", lambda e: COMPARE(e, "--out", e.a_file()), r"is a file; --out must be a folder"),
    cli("cli-compare-other-shapes", lambda e: _s("compare", e.s / "neurons.json", e.s / "llama_neurons.json", "--out", e.out), r"different model shapes: 4×128 vs 3×128"),
    cli("cli-compare-unknown-trained", lambda e: COMPARE(e, "--trained", "xx"), r"trained language\(s\) \['xx'\] are not in both"),
    cli("cli-compare-base-without-aligned", lambda e: COMPARE(e, "--trained", "de", "--base-model", e.tiny_dir), r"--base-model and --aligned-model go together"),
    cli("cli-compare-models-without-trained", lambda e: COMPARE(e, "--base-model", e.tiny_dir, "--aligned-model", e.tiny_dir), r"need --trained"),
    cli("cli-compare-n-eval-zero", lambda e: COMPARE(e, "--n-eval", "0"), r"--n-eval: must be a positive integer", usage=True),
    cli("cli-compare-missing-set", lambda e: _s("compare", e.tmp / "a.json", e.s / "neurons.json", "--out", e.out), r"no neuron set at .*a\.json"),
    # ---- align
    cli("cli-align-steps-zero", lambda e: ALIGN(e, "--steps", "0"), r"--steps: must be a positive integer", usage=True),
    cli("cli-align-lr-zero", lambda e: ALIGN(e, "--lr", "0"), r"--lr: must be a positive number", usage=True),
    cli("cli-align-rank-negative", lambda e: ALIGN(e, "--rank", "-2"), r"--rank: must be a positive integer", usage=True),
    cli("cli-align-out-is-a-file", lambda e: ALIGN(e, "--out", e.a_file()), r"is a file; --out must be a folder"),
    cli("cli-align-out-is-a-user-folder", lambda e: ALIGN(e, "--out", e.user_folder()), r"is a folder steer did not write"),
    cli("cli-align-unknown-objective", lambda e: ALIGN(e, "--objective", "rlhf"), r"--objective: invalid choice: 'rlhf'", usage=True),
    cli("cli-align-pivot-is-trained", lambda e: ALIGN(e, "--train-languages", "en"), r"the pivot 'en' is also a train language"),
    # ---- demo
    cli("cli-demo-out-is-a-file", lambda e: DEMO(e, "--out", e.a_file()), r"is a file; --out must be a folder"),
    cli("cli-demo-threads-zero", lambda e: DEMO(e, "--threads", "0"), r"--threads: must be a positive integer", usage=True),
    cli("cli-demo-unknown-model", lambda e: DEMO(e, "--model", "no-such-model"), r"unknown model 'no-such-model'"),
    cli("cli-demo-missing-corpus", lambda e: DEMO(e, "--corpus", e.tmp / "nowhere"), r"cannot load a corpus from"),
    # ---------------------------------------------------------------- round two: the output-folder rule
    cli("out-collect-user-folder-with-stats-json", lambda e: COLLECT(e, "--out", _user_stats_folder(e)),
        r"'.*mine' is a folder steer did not write \(it holds notes\.txt, stats\.json\)"),
    cli("out-identify-inside-its-stats-input", lambda e: IDENTIFY(e, "--out", e.s / "stats" / "stats.safetensors"),
        r"--out '.*stats\.safetensors' sits inside the input '.*stats'"),
    cli("out-identify-is-its-stats-input", lambda e: IDENTIFY(e, "--out", e.s / "stats"), r"--out '.*stats' is the input"),
    cli("out-identify-over-a-users-text-file", lambda e: IDENTIFY(e, "--out", e.write("thesis_notes.txt", "chapter 1")),
        r"thesis_notes\.txt' is a file; --out must be a folder"),
    cli("out-identify-over-a-users-json", lambda e: IDENTIFY(e, "--out", e.write("thesis.json", '{"chapter": 1}')),
        r"thesis\.json' exists and is not a neuron set steer wrote"),
    cli("out-identify-under-a-file", lambda e: IDENTIFY(e, "--out", e.a_file() / "n.json"), r"'.*taken' is a file, not a folder"),
    cli("out-compare-into-a-bench-run", lambda e: COMPARE(e, "--out", _steer_folder(e, "bench")),
        r"'.*run' holds the output of `steer bench`; give a new or empty folder for `steer compare`"),
    cli("out-collect-empty-string", lambda e: COLLECT(e, "--out", ""), r"--out is empty \(an unset shell variable\?\)"),
    cli("out-identify-empty-string", lambda e: IDENTIFY(e, "--out", ""), r"--out is empty"),
    cli("out-bench-empty-string", lambda e: BENCH(e, "--out", ""), r"--out is empty"),
    cli("out-generate-empty-string", lambda e: GENERATE(e, "--out", ""), r"--out is empty"),
    cli("out-corpus-into-its-own-input", lambda e: _s("corpus", "build", "--from-dir", e.s / "texts", "--out", e.s / "texts" / "built"),
        r"sits inside the input '.*texts'"),
    cli("out-bench-over-its-stats-input", lambda e: BENCH(e, "--out", e.s / "stats"), r"--out '.*stats' is the input"),
    cli("out-align-dotfiles-only", lambda e: ALIGN(e, "--out", _dotfile_folder(e)),
        r"'.*repo' is a folder steer did not write \(it holds \.env, \.git\)"),
    api("out-api-align-dotfiles-only", lambda e: align(e.tiny_dir, e.s / "texts", _dotfile_folder(e), AlignConfig(["de"], steps=1), progress=False),
        ValueError, r"steer did not write \(it holds \.env, \.git\)"),
    api("out-api-stats-save-into-a-user-folder", lambda e: e.stats.save(e.user_folder()), ValueError, r"steer did not write"),
    api("out-api-neurons-save-over-a-users-json", lambda e: e.neurons.save(e.write("mine.json", "{}")), ValueError,
        r"mine\.json' exists and is not a neuron set steer wrote"),
    api("out-writer-never-replaces-a-file-the-user-added", lambda e: write_json_atomic(e.tmp / "run" / "summary.json", {}), ValueError,
        r"summary\.json' is in steer's output folder .* steer did not write it",
        setup=lambda e: _steer_folder(e, "bench") and e.write("run/summary.json", "the user's")),
    Case("out-corpus-rebuild-keeps-the-users-readme", lambda e: _s("corpus", "build", "--from-dir", e.s / "texts", "--out", e.out),
         None, None, cli=True, writes=True, exit_code=0, setup=_rebuild_keeps_readme, check=_readme_kept),
    Case("out-collect-deletes-only-its-own-checkpoint", lambda e: COLLECT(e, "--corpus", e.tmp / "small", "--batch-size", "2"), None, None,
         cli=True, setup=_collect_folder_with_foreign_rank, loads=True, writes=True, exit_code=0,
         check=lambda e: (e.out / "checkpoint" / "rank7.safetensors").read_bytes() == b"another run's, not this one's"
         and not (e.out / "checkpoint" / "rank0.safetensors").exists()),
    # ---------------------------------------------------------------- round two: language codes
    api("codes-textdir-stray-readme", lambda e: Corpus.from_text_dir(_two_texts_and(e, "README.txt")), ValueError,
        r"README\.txt not named <lang>\.txt for a language code"),
    api("codes-textdir-en-and-EN", lambda e: Corpus.from_text_dir(_two_texts_and(e, "EN.txt")), ValueError,
        r"'EN' and 'en' are the same language \('en'\)"),
    api("codes-jsonl-path-traversal", lambda e: Corpus.from_jsonl(e.write("c.jsonl", '{"lang": "../../victim", "text": "x"}\n')),
        ValueError, r"c\.jsonl:1: \"lang\": '\.\./\.\./victim' is not a language code"),
    api("codes-jsonl-absolute-path", lambda e: Corpus.from_jsonl(e.write("c.jsonl", '{"lang": "/tmp/evil", "text": "x"}\n')),
        ValueError, r"'/tmp/evil' is not a language code"),
    api("codes-jsonl-same-language-twice", lambda e: Corpus.from_jsonl(e.write("c.jsonl", '{"lang": "en ", "text": "a b"}\n{"lang": "DE", "text": "c d"}\n{"lang": "EN", "text": "e f"}\n')).languages,
        None, None, check=lambda e: Corpus.from_jsonl(e.tmp / "c.jsonl").languages == ["en", "de"]),
    fine("codes-textdir-bom-is-not-text", lambda e: setattr(e, "value", Corpus.from_text_dir(_bom_texts(e))),
         check=lambda e: all(not t.startswith("\ufeff") for t in e.value.stats["en"] + e.value.eval["en"])),
    api("codes-saved-corpus-lists-a-path", lambda e: Corpus.load(_corpus_listing(e, ["en", "../../etc/passwd"])),
        ValueError, r"corpus at .* is damaged \(.*'\.\./\.\./etc/passwd' is not a language code"),
    cli("cli-generate-mask-experts-on-a-dense-model", lambda e: GENERATE(e, "--stats", e.s / "stats", "--mask-experts", "de"),
        r"these stats have no routing counts: they come from a dense model"),
    cli("cli-generate-mask-experts-without-stats", lambda e: GENERATE(e, "--mask-experts", "de"), r"--mask-experts needs --stats"),
    cli("codes-cli-collect-bad-language", lambda e: COLLECT(e, "--languages", "en,../x"), r"--languages: '\.\./x' is not a language code"),
    cli("codes-cli-generate-bad-force-language", lambda e: FORCE(e, "--force-language", "d e"), r"--force-language: 'd e' is not a language code"),
    api("codes-stats-bad-code", lambda e: ActivationStats(["en", "ReadMe.md"], torch.zeros(2, 1, 1), torch.ones(2)), ValueError,
        r"stats languages: 'ReadMe\.md' is not a language code"),
    # ---------------------------------------------------------------- round two: resume checks everything
    api("resume-edited-corpus-same-shape", lambda e: steer.collect(e.tiny, e.value, batch_size=1, checkpoint=e.tmp / "ck", progress=False),
        ValueError, r"does not match this run \(changed: corpus texts; batch plan\)", setup=_transposed_typo),
    api("resume-checkpoint-without-done-batches", lambda e: steer.collect(e.tiny, e.value, batch_size=1, checkpoint=e.tmp / "ck", progress=False),
        ValueError, r"does not say how many batches it holds \(done_batches\)", setup=lambda e: _edit_checkpoint(e, lambda m: m.pop("done_batches"))),
    api("resume-other-world-size", lambda e: steer.collect(e.tiny, e.value, batch_size=1, checkpoint=e.tmp / "ck", progress=False),
        ValueError, r"changed: number of processes \(2 there, 1 now\)", setup=lambda e: _edit_checkpoint(e, lambda m: m.update(world_size=2))),
    api("resume-counts-disagree-with-done-batches", lambda e: steer.collect(e.tiny, e.value, batch_size=1, checkpoint=e.tmp / "ck", progress=False),
        ValueError, r"counts \[\d+, \d+\] tokens per language, but its first 1 batches hold", setup=lambda e: _edit_checkpoint(e, lambda m: m.update(done_batches=1))),
    # ---------------------------------------------------------------- round two: checks that were skipped
    api("late-neurons-without-model-record-loaded-for-a-model", lambda e: NeuronSet.load(_unrecorded_neurons(e), model=e.tiny),
        ValueError, r"neuron set '.*neurons\.json' records no model \(no weights hash\).*unrecorded=True"),
    api("late-neurons-without-model-record-steered", lambda e: steer.deactivate(e.tiny, NeuronSet.load(_unrecorded_neurons(e))["en"]),
        ValueError, r"records no model"),
    fine("late-neurons-without-model-record-when-asked", lambda e: steer.deactivate(e.tiny, NeuronSet.load(_unrecorded_neurons(e), unrecorded=True)["en"])),
    cli("late-cli-ablate-neurons-without-model-record", lambda e: ABLATE(e, neurons=_unrecorded_neurons(e)), r"records no model", loads=True),
    api("late-merge-stats-without-model-record", lambda e: e.stats.merge(ActivationStats.from_counts(["en"], torch.zeros(1, 4, 128, dtype=torch.int64), torch.tensor([1]))),
        ValueError, r"cannot merge stats that record no model.*unrecorded=True"),
    api("late-intervention-fractional-layer", lambda e: Intervention("suppress", layers=[1.5]), ValueError, r"layers must be whole layer numbers, got 1\.5"),
    api("late-generate-phase-without-force", lambda e: steer.generate(e.tiny, "Hi", phase="output"), ValueError, r"phase applies only with force_language"),
    api("late-generate-suppress-without-force", lambda e: steer.generate(e.tiny, "Hi", suppress="others"), ValueError, r"suppress applies only with force_language"),
    api("late-output-phase-on-a-plain-forward", _output_phase_on_a_plain_forward, RuntimeError, r"phase 'output' needs to know where the prompt ends"),
    api("late-toml-missing-neuron-path", lambda e: _toml(e, GOOD_TOML + '[neurons.m]\npath = "nowhere.json"\n'), ValueError,
        r"\[neurons\.m\] path: '.*nowhere\.json' does not exist"),
    api("late-toml-strength-nan", lambda e: _toml(e, GOOD_TOML + "[bench.forced]\nstrength = nan\n"), ValueError, r"'strength' must be a number, got nan"),
    api("late-toml-top-rate-string", lambda e: _toml(e, GOOD_TOML.replace('method = "zhang2025"\n', 'method = "zhang2025"\ntop_rate = "lots"\n')),
        ValueError, r"top_rate must be in \(0, 1\], got lots"),
    api("late-toml-negative-repetition-penalty", lambda e: _toml(e, GOOD_TOML + "[bench.forced]\nrepetition_penalty = -1.0\n"), ValueError,
        r"repetition_penalty must be above 0"),
    api("late-toml-list-element-types", lambda e: _toml(e, GOOD_TOML + '[bench.forced]\nsweep_strengths = ["a"]\n'), ValueError,
        r"'sweep_strengths' must be a list of numbers, got \['a'\]"),
    api("late-toml-bad-language-code", lambda e: _toml(e, GOOD_TOML + '[bench.forced]\nsweep_targets = ["d e"]\n'), ValueError,
        r"'sweep_targets' must be a list of language codes"),
    cli("late-bench-sweep-target-typo", lambda e: _s("bench", _bench_config(e, _with_corpus(e, "[bench.forced]\nsweep_targets = [\"dee\"]\n")), "--out", e.out),
        r"sweep_targets names \['dee'\], not among the run's languages \(de, en, ja\)"),
    cli("late-bench-unknown-low-resource", lambda e: _s("bench", _bench_config(e, _with_corpus(e, "[bench.transfer]\nlow_resource = [\"om\"]\n")), "--out", e.out),
        r"low_resource names \['om'\], not among the run's languages"),
    api("late-demo-knob-list-types", lambda e: run_demo(e.out, quick=True, model=e.tiny_dir, corpus=e.s / "texts", sweep_strengths=["a"], progress=False),
        ValueError, r"'sweep_strengths' must be a list of numbers"),
    api("late-demo-knob-target-typo", lambda e: run_demo(e.out, quick=True, model=e.tiny_dir, corpus=e.s / "texts", sweep_targets=["dee"], progress=False),
        ValueError, r"sweep_targets names \['dee'\]"),
    api("late-demo-one-held-out-text-per-language", lambda e: run_demo(e.out, quick=True, model=e.tiny_dir, corpus=e.tmp / "one", progress=False),
        ValueError, r"\[bench\.forced\] forced: forcing a language needs at least 2 held-out paragraphs per language", setup=_one_eval_text_per_language),
    # ---------------------------------------------------------------- round two: errors a person can act on
    api("act-damaged-align-state", lambda e: align(e.tiny_dir, e.s / "texts", e.out, AlignConfig(["de"], steps=1), progress=False),
        ValueError, r"cannot read '.*checkpoint/state\.json' .*damaged: delete .*checkpoint to start over",
        setup=lambda e: _damaged_align_file(e, "checkpoint/state.json"), loads=True),
    api("act-damaged-align-json", lambda e: align(e.tiny_dir, e.s / "texts", e.out, AlignConfig(["de"], steps=1), progress=False),
        ValueError, r"cannot read '.*align\.json' .*damaged", setup=lambda e: _damaged_align_file(e, "align.json"), loads=True),
]


def test_the_table_is_large_and_ids_unique():
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})
    assert len(CASES) >= 100


def _one_line(message: str) -> None:
    assert message.strip(), "empty message"
    assert "\n" not in message.strip(), f"more than one line: {message!r}"


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case: Case, env: Env, loads, capsys):
    if case.setup is not None:
        case.setup(env)
    capsys.readouterr()
    loads["allow"] = case.loads
    roots = (env.tmp, env.s)
    before = snapshot(*roots)
    hooks = hook_count(env.tiny)

    if case.cli:
        argv = case.act(env)
        if case.usage:
            with pytest.raises(SystemExit) as exit_:
                main(argv)
            assert exit_.value.code == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert err and err[0].startswith("usage:"), err
            assert re.search(r"^steer .*: error: ", err[-1]), err
            assert re.search(case.match, err[-1]), err[-1]
        else:
            code = main(argv)
            captured = capsys.readouterr()
            assert code == case.exit_code, (code, captured.err[-2000:])
            if case.exit_code == 2:
                err = captured.err.strip()
                _one_line(err)
                assert err.startswith("steer: error: "), err
                assert re.search(case.match, err), err
            elif case.match:
                _one_line(captured.err)
                assert re.search(case.match, captured.err), captured.err
    elif case.expect is not None and issubclass(case.expect, Warning):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            case.act(env)
        messages = [str(w.message) for w in caught if issubclass(w.category, case.expect)]
        assert any(re.search(case.match, m) for m in messages), messages
        for message in messages:
            _one_line(message)
    elif case.expect is not None:
        with pytest.raises(BaseException) as info:
            case.act(env)
        assert isinstance(info.value, case.expect), f"{type(info.value).__name__}: {info.value}"
        if case.match is not None:
            message = str(info.value)
            _one_line(message)
            assert re.search(case.match, message), message
    else:
        case.act(env)

    if not case.writes:
        after, expected = snapshot(*roots), {**before, **env.made}
        changed = sorted(k for k in expected.keys() | after.keys() if expected.get(k) != after.get(k))
        assert not changed, f"files written, changed or deleted: {changed}"
    assert hook_count(env.tiny) == hooks, "hooks left on the model"
    if case.check is not None:
        assert case.check(env) is not False


@pytest.mark.parametrize("how", ["option", "after the verb", "environment"])
def test_debug_shows_the_traceback_above_the_one_line(how, env: Env, loads, capsys, monkeypatch):
    argv = COLLECT(env, "--languages", "en,xx")
    if how == "option":
        argv = ["--debug", *argv]
    elif how == "after the verb":
        argv = [*argv, "--debug"]
    else:
        monkeypatch.setenv("STEER_DEBUG", "1")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("Traceback") and any("cmd_collect" in line for line in err)
    assert re.match(r"steer: error: --languages: the corpus has no language \['xx'\]", err[-1])
