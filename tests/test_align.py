"""steer.align on tiny random models (seconds each), plus one short run on the embedded Gemma marked `integration`."""

from __future__ import annotations

import json
import math

import pytest
import torch

import steer
from steer import align as A
from steer.align import AlignConfig, align, build_examples, translation_prompt
from steer.align import data, objectives, training
from steer.corpus import Corpus
from steer.testing import tiny_model_dir

EN = ["the cat is red", "the dog is small", "the sun is hot", "the car is fast"]
EU = ["katua gorria da", "txakurra txikia da", "eguzkia beroa da", "autoa azkarra da"]
OM = ["adurreen diimaa dha", "sareen xiqqaa dha", "aduun ho'aa dha", "konkolaataan ariifataa dha"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_model_dir("gemma3", root=tmp_path_factory.mktemp("models"))


def parallel_corpus(repeat: int = 3, extra_eval: str = "held out text") -> Corpus:
    """A learnable parallel corpus: four short sentence pairs, repeated."""
    stats = {"en": EN * repeat, "eu": EU * repeat, "om": OM * repeat}
    evals = {lang: [f"{extra_eval} {lang}"] for lang in stats}
    return Corpus(languages=["en", "eu", "om"], stats=stats, eval=evals, ids={}, source="test", parallel=True)


@pytest.fixture(scope="module")
def corpus():
    return parallel_corpus()


def merged_state(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def hf_model(folder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


# -- configuration and bad input ----------------------------------------------------------------------


def test_config_roundtrip_and_defaults():
    config = AlignConfig(train_languages="eu, om", steps=7, max_pairs=3)
    assert config.train_languages == ["eu", "om"]
    assert config.pivot == "en" and config.objective == "translation"
    assert config.target_modules == A.DEFAULT_TARGET_MODULES
    again = AlignConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    with pytest.raises(ValueError, match="unknown AlignConfig field"):
        AlignConfig.from_dict({**config.to_dict(), "learning_rate": 1.0})


@pytest.mark.parametrize(
    ("change", "corpus_change", "message"),
    [
        ({"train_languages": ["eu", "xx"]}, None, r"train language\(s\) \['xx'\] not in the corpus"),
        ({"pivot": "de"}, None, "pivot language 'de' is not in the corpus"),
        ({"steps": 0}, None, r"steps must be at least 1 \(got 0\)"),
        ({"objective": "rlhf"}, None, "unknown objective 'rlhf': use one of translation, dpo"),
        ({"train_languages": ["eu", "en"]}, None, "the pivot 'en' is also a train language"),
        ({"train_languages": []}, None, "no languages to train"),
        ({"batch_size": 0}, None, "batch_size must be at least 1"),
        ({"max_length": 4}, None, "max_length must be at least 16"),
        ({}, "not_parallel", "needs a parallel corpus"),
        ({}, "untranslated", "no translated paragraph"),
    ],
)
def test_bad_input_is_a_one_line_error_before_any_work(tiny, tmp_path, monkeypatch, change, corpus_change, message):
    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(training, "load_hf_model", no_model)
    data = parallel_corpus(repeat=1)
    if corpus_change == "not_parallel":
        data = Corpus(languages=data.languages, stats=data.stats, eval=data.eval, source="t", parallel=False)
    elif corpus_change == "untranslated":
        data = Corpus(languages=["en", "eu"], stats={"en": EN, "eu": list(EN)}, eval={"en": [], "eu": []},
                      source="t", parallel=True)  # fmt: skip
    config = AlignConfig(**{"train_languages": ["eu"], **change})
    with pytest.raises(ValueError, match=message) as info:
        align(tiny, data, tmp_path / "out", config, progress=False)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_target_modules_missing_from_the_model(tiny, corpus, tmp_path):
    config = AlignConfig(["eu"], steps=1, target_modules=["c_attn"])
    with pytest.raises(ValueError, match=r"none of the target modules \['c_attn'\].*q_proj"):
        align(tiny, corpus, tmp_path / "out", config, progress=False)


def test_out_folder_that_is_not_ours_is_refused(tiny, corpus, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="is a folder steer did not write"):
        align(tiny, corpus, out, AlignConfig(["eu"], steps=1), progress=False)
    assert (out / "notes.txt").read_text() == "mine"


# -- examples and encoding ----------------------------------------------------------------------------


def test_examples_use_the_stats_split_in_both_directions():
    data = parallel_corpus(repeat=1)
    examples = build_examples(data, AlignConfig(["eu", "om"]))
    assert len(examples) == 4 * 2 * 2
    texts = {e.src_text for e in examples} | {e.tgt_text for e in examples}
    assert not any("held out" in t for t in texts)
    first = examples[:4]
    assert [(e.src_lang, e.tgt_lang) for e in first] == [("eu", "en"), ("en", "eu"), ("om", "en"), ("en", "om")]
    assert first[0].src_text == EU[0] and first[0].tgt_text == EN[0]
    assert first[1].src_text == EN[0] and first[1].tgt_text == EU[0]
    picked = build_examples(data, AlignConfig(["eu"], max_pairs=2))
    assert len(picked) == 4 and len({e.index for e in picked}) == 2
    assert picked == build_examples(data, AlignConfig(["eu"], max_pairs=2))  # seeded


def test_untranslated_paragraphs_are_skipped():
    data = Corpus(languages=["en", "eu"], stats={"en": EN, "eu": [EU[0], EN[1], EU[2], ""]},
                  eval={"en": [], "eu": []}, source="t", parallel=True)  # fmt: skip
    examples = build_examples(data, AlignConfig(["eu"]))
    assert sorted({e.index for e in examples}) == [0, 2]


def test_encoding_masks_the_prompt_and_truncates(tiny):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    example = A.Example(0, "eu", "en", EU[0], EN[0])
    encoder = data.Encoder(tokenizer, max_length=128)
    ids, n_prompt = encoder.encode(example, example.tgt_text)
    prompt = translation_prompt("eu", "en", EU[0])
    assert prompt == "Translate from Basque to English:\nkatua gorria da\nEnglish:"
    assert ids[:n_prompt] == tokenizer(prompt).input_ids
    assert tokenizer.decode(ids[n_prompt:]) == " " + EN[0] + tokenizer.eos_token
    input_ids, attention, labels = encoder.batch([(ids, n_prompt), (ids[:-3], n_prompt)])
    assert (labels[0, :n_prompt] == -100).all() and labels[0, n_prompt:].tolist() == ids[n_prompt:]
    assert (labels[1, len(ids) - 3 :] == -100).all() and (attention[1, len(ids) - 3 :] == 0).all()

    long = A.Example(0, "eu", "en", "x" * 300, "y" * 300)
    short = data.Encoder(tokenizer, max_length=64)
    ids, n_prompt = short.encode(long, long.tgt_text)
    assert len(ids) == 64 and 0 < n_prompt < 64
    assert tokenizer.decode(ids[n_prompt:]).startswith(" yyy")


def test_fast_loss_equals_the_models_own_loss(tiny):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    model = hf_model(tiny)
    encoder = data.Encoder(tokenizer, max_length=128)
    rows = [encoder.encode(A.Example(i, "eu", "en", EU[i], EN[i]), EN[i]) for i in range(3)]
    input_ids, attention, labels = encoder.batch(rows)
    scorer = objectives.Scorer(model)
    assert scorer.decide(input_ids, attention, labels) is True
    with torch.no_grad():
        ours = objectives.translation_loss(scorer, encoder, [A.Example(i, "eu", "en", EU[i], EN[i]) for i in range(3)], "cpu")
        theirs = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_example_order_is_a_function_of_the_step():
    order = training._Order(10, 4, seed=3)
    steps = [order.batch(s) for s in range(5)]
    assert sorted(steps[0] + steps[1] + order.batch(2)[:2]) == list(range(10))  # an epoch is a permutation
    assert training._Order(10, 4, seed=3).batch(4) == steps[4]
    assert training._Order(10, 4, seed=4).batch(0) != steps[0]


# -- training -------------------------------------------------------------------------------------------


def test_loss_decreases_and_the_merged_model_loads(tiny, corpus, tmp_path):
    from peft import PeftModel

    from steer.models import weights_hash

    config = AlignConfig(["eu", "om"], steps=20, lr=1e-2, batch_size=4)
    out = align(tiny, corpus, tmp_path / "out", config, progress=False)
    info = json.loads((out / "align.json").read_text())
    losses = info["losses"]
    assert len(losses) == 20 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.3, losses
    assert info["base_weights_hash"] == weights_hash(hf_model(tiny))
    assert info["corpus_fingerprint"] == corpus.fingerprint()
    assert AlignConfig.from_dict(info["config"]) == config
    assert info["target_modules_used"] == A.DEFAULT_TARGET_MODULES
    assert info["steer_version"] and info["seconds"] > 0 and info["n_examples"] == 48
    assert not (out / "checkpoint").exists()

    text = translation_prompt("eu", "en", EU[1]) + " " + EN[1]
    bridge = steer.load_model(out)
    tokens = bridge.tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        merged_logits = bridge(tokens, return_type="logits")
        lora = PeftModel.from_pretrained(hf_model(tiny), out / "adapter").eval()
        lora_logits = lora(input_ids=tokens).logits
        base_logits = hf_model(tiny)(input_ids=tokens).logits
    torch.testing.assert_close(merged_logits, lora_logits, atol=1e-4, rtol=1e-4)
    assert (merged_logits - base_logits).abs().max() > 1e-2  # training changed the model
    assert A.read_align_info(out)["weights_hash"] == weights_hash(hf_model(out))


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_other_architectures(arch, corpus, tmp_path):
    folder = tiny_model_dir(arch, root=tmp_path / "models")
    targets = ["c_attn", "c_proj", "c_fc"] if arch == "gpt2" else A.DEFAULT_TARGET_MODULES
    config = AlignConfig(["eu"], steps=3, target_modules=targets)
    out = align(folder, corpus, tmp_path / "out", config, progress=False)
    assert A.read_align_info(out)["steps"] == 3
    hf_model(out)


class Killed(Exception):
    """Raised after a chosen step: the run stops as if killed there."""


def kill_after(n_steps: int):
    def after_step(step: int) -> None:
        if step >= n_steps:
            raise Killed(f"stopped after step {step}")

    return after_step


def test_resumed_run_equals_an_uninterrupted_run(tiny, corpus, tmp_path, monkeypatch):
    # dropout > 0 draws random numbers every step, so this also checks that the RNG state is restored
    config = AlignConfig(["eu", "om"], steps=6, checkpoint_every=3, lr=1e-2, dropout=0.1, batch_size=3)
    whole = align(tiny, corpus, tmp_path / "whole", config, progress=False)

    out = tmp_path / "resumed"
    with monkeypatch.context() as patch, pytest.raises(Killed):
        patch.setattr(training, "_after_step", kill_after(4))
        align(tiny, corpus, out, config, progress=False)  # step 4 is lost, as if killed
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["step"] == 3 and len(state["losses"]) == 3
    assert not (out / "align.json").exists()

    with pytest.raises(ValueError, match=r"other settings \(steps: 6 there, 7 now\).*to resume it"):
        align(tiny, corpus, out, AlignConfig(**{**config.to_dict(), "steps": 7}), progress=False)
    with pytest.raises(ValueError, match="another corpus"):
        align(tiny, parallel_corpus(repeat=2), out, config, progress=False)

    changed_io = AlignConfig(**{**config.to_dict(), "checkpoint_every": 2})  # does not change the result
    align(tiny, corpus, out, changed_io, progress=False)
    a, b = merged_state(whole), merged_state(out)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert A.read_align_info(whole)["losses"] == A.read_align_info(out)["losses"]


def test_rerun_after_completion(tiny, corpus, tmp_path):
    config = AlignConfig(["eu"], steps=2)
    out = align(tiny, corpus, tmp_path / "out", config, progress=False)
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert align(tiny, corpus, out, config, progress=False) == out
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match=r"already holds an aligned model made with other settings \(lr"):
        align(tiny, corpus, out, AlignConfig(["eu"], steps=2, lr=1e-3), progress=False)


def test_dpo_prefers_the_translation(tiny, corpus, tmp_path):
    config = AlignConfig(["eu", "om"], objective="dpo", steps=15, lr=1e-2, beta=0.5)
    out = align(tiny, corpus, tmp_path / "out", config, progress=False)
    losses = A.read_align_info(out)["losses"]
    assert losses[0] == pytest.approx(math.log(2), abs=1e-4)  # policy == reference at the start
    assert sum(losses[-3:]) / 3 < losses[0] - 0.1, losses


# -- the embedded model -------------------------------------------------------------------------------


@pytest.mark.integration
def test_two_steps_on_gemma(tmp_path):
    from steer.models import embedded_model_dir

    config = AlignConfig(["eu"], steps=2, batch_size=2, max_length=48)
    out = align("gemma-3-270m", parallel_corpus(repeat=1), tmp_path / "out", config, progress=False)
    info = A.read_align_info(out)
    assert info["base_model"] == "gemma-3-270m" and len(info["losses"]) == 2
    assert info["weights_hash"] != info["base_weights_hash"]
    assert (out / "GEMMA_TERMS.html").exists() == (embedded_model_dir() / "GEMMA_TERMS.html").exists()
    config_json = json.loads((out / "config.json").read_text())
    assert config_json["model_type"] == "gemma3_text"
