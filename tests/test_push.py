"""The learned language push: fitting on a tiny model, the file, generation under it, its refusals."""

from __future__ import annotations

import pytest
import torch

import steer
from steer.cli import main
from steer.hooks import hook_count
from steer.models import model_info
from steer.push import LanguagePush
from steer.push_training import (IGNORE, PushTraining, _continuation_loss, _encode, continuation_loss, fit_push,
                                 training_pairs)

from conftest import TEXTS

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = PushTraining(max_steps=24, batch_size=4, lr=0.2, eval_every=4, patience=3, seed=0)


@pytest.fixture(scope="module")
def parallel():
    """TEXTS are translations of each other: a parallel corpus (three copies, so there are paragraphs to hold out)."""
    stats = {lang: lines * 3 for lang, lines in TEXTS.items()}
    return steer.Corpus(languages=list(TEXTS), stats=stats, eval={lang: lines[:2] for lang, lines in TEXTS.items()},
                        ids={}, source="test-parallel", parallel=True)


@pytest.fixture(scope="module")
def push_neurons(tiny, parallel):
    return steer.identify(steer.collect(tiny, parallel, batch_size=4, progress=False), method="specificity",
                          n_per_language=24)


@pytest.fixture(scope="module")
def de_push(tiny, parallel, push_neurons):
    return fit_push(tiny, parallel, "de", neurons=push_neurons, training=FAST, progress=False)


def _held_out_loss(model, corpus, push=None) -> float:
    """Cross-entropy of the German continuations of the held-out paragraphs after English/Japanese openings."""
    held = steer.Corpus(languages=corpus.languages, stats=corpus.eval, eval=corpus.eval, ids={}, source="x",
                        parallel=True)
    pairs = training_pairs(held, "de", ["en", "ja"])
    ids, attention, labels = _encode(model.tokenizer, pairs, 96, spaced=True)
    with torch.no_grad():
        if push is None:
            logits = model.original_model(input_ids=ids, attention_mask=attention).logits
        else:
            with steer.intervene(model, pushes=[push.applied()]):
                logits = model.original_model(input_ids=ids, attention_mask=attention).logits
    return float(_continuation_loss(logits, labels))


def _change_at(model, hook_point: str, applied) -> torch.Tensor:
    """How `applied` (a push as steered) changes the activation at `hook_point` on a short German text."""
    seen = {}

    def grab(name):
        def hook(activation):
            seen[name] = activation.detach().clone()

        return hook

    ids = model.tokenizer("Öffnen Sie die Datei.", return_tensors="pt")["input_ids"]
    with steer.hooks.attached(model, [(hook_point, grab("base"))]), torch.no_grad():
        model.original_model(input_ids=ids)
    with steer.intervene(model, pushes=[applied]):
        with steer.hooks.attached(model, [(hook_point, grab("pushed"))]), torch.no_grad():
            model.original_model(input_ids=ids)
    return seen["pushed"] - seen["base"]


def test_a_fitted_push_makes_held_out_target_text_more_likely(tiny, parallel, de_push):
    """Trained on the stats split only, the push lowers the loss of German continuations of held-out paragraphs."""
    curve = de_push.meta["curve"]
    assert curve and de_push.meta["val_loss"] < de_push.meta["val_loss_unpushed"]
    assert _held_out_loss(tiny, parallel, de_push) < _held_out_loss(tiny, parallel) - 0.01
    assert de_push.target == "de" and len(de_push) == de_push.meta["neurons"]["count"]


def test_fitting_changes_only_the_offsets_and_is_a_function_of_its_seed(tiny, parallel, push_neurons, de_push):
    before = model_info(tiny).weights_hash
    hooks = hook_count(tiny)
    flags = [p.requires_grad for p in tiny.original_model.parameters()]
    again = fit_push(tiny, parallel, "de", neurons=push_neurons, training=FAST, progress=False)
    assert torch.equal(again.offsets, de_push.offsets)
    other = fit_push(tiny, parallel, "de", neurons=push_neurons, progress=False,
                     training=PushTraining(**{**FAST.__dict__, "seed": 1}))
    assert not torch.equal(other.offsets, de_push.offsets)
    assert steer.models.weights_hash(tiny.original_model) == before
    assert [p.requires_grad for p in tiny.original_model.parameters()] == flags  # the model is left as it was
    assert hook_count(tiny) == hooks


def test_snapshots_at_each_validation_follow_the_learning_curve(tiny, parallel, push_neurons, de_push):
    """`on_eval` sees the push as it stands at every validation; the returned push is the snapshot of the best
    validation loss, and fitting with the callback changes nothing."""
    seen = {}
    again = fit_push(tiny, parallel, "de", neurons=push_neurons, training=FAST, progress=False,
                     on_eval=lambda step, push: seen.setdefault(step, push))
    assert list(seen) == [point["step"] for point in de_push.meta["curve"]]
    assert [seen[p["step"]].meta["val_loss"] for p in de_push.meta["curve"]] == [p["val_loss"] for p in de_push.meta["curve"]]
    assert torch.equal(again.offsets, de_push.offsets)
    assert torch.equal(seen[de_push.meta["best_step"]].offsets, de_push.offsets)
    assert not torch.equal(seen[min(seen)].offsets, seen[max(seen)].offsets)
    assert seen[min(seen)].meta["model"] == de_push.meta["model"]  # a snapshot is a push file like any other


def test_the_push_acts_on_its_neurons_only(tiny, de_push):
    """Under the push the down_proj input changes by exactly the offsets at the pushed (layer, neuron)s."""
    layer, (index, offsets) = next(iter(de_push.per_layer().items()))
    delta = _change_at(tiny, model_info(tiny).site.down_input_hook(layer), de_push.applied(scale=2.0))
    torch.testing.assert_close(delta[..., index], (2.0 * offsets).expand_as(delta[..., index]))
    others = torch.ones(delta.shape[-1], dtype=torch.bool)
    others[index] = False
    assert torch.equal(delta[..., others], torch.zeros_like(delta[..., others]))


def test_the_file_round_trips_and_is_refused_for_another_model(tiny, tiny_llama, de_push, tmp_path):
    folder = de_push.save(tmp_path / "push_de")
    loaded = LanguagePush.load(folder, model=tiny)
    assert torch.equal(loaded.offsets, de_push.offsets) and torch.equal(loaded.neurons, de_push.neurons)
    assert loaded.meta["corpus"]["fingerprint"] == de_push.meta["corpus"]["fingerprint"]
    assert loaded.meta["training"]["lr"] == FAST.lr and loaded.meta["model"]["weights_hash"]
    with pytest.raises(ValueError, match="is for a model with 4 layers .* but '.*' has 3"):
        LanguagePush.load(folder, model=tiny_llama)
    with pytest.raises(ValueError, match="is for a model with"):
        steer.generate(tiny_llama, "Hello", push=loaded, max_new_tokens=2)
    (folder / "push.safetensors").write_bytes((folder / "push.safetensors").read_bytes()[:40])
    with pytest.raises(ValueError, match=r"cannot read .*push\.safetensors. .*damaged or truncated: fit the push again"):
        LanguagePush.load(folder)


def test_generate_with_a_push_is_the_same_with_and_without_cache_and_batching(tiny, de_push):
    prompts = ["The cat sits on the", "Diese Funktion gibt die", "この関数は値の"]
    kwargs = dict(max_new_tokens=4, return_logits=True, detect=False, steps=None)
    cached = steer.generate(tiny, prompts, push=de_push, **kwargs)
    uncached = steer.generate(tiny, prompts, push=de_push, use_cache=False, batch_size=1, **kwargs)
    assert cached.texts == uncached.texts
    for a, b in zip(cached.logits, uncached.logits):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    plain = steer.generate(tiny, prompts, max_new_tokens=4, return_logits=True, detect=False)
    assert any(not torch.allclose(a[0], b[0], atol=1e-4) for a, b in zip(cached.logits, plain.logits))
    assert cached.settings["mode"] == "learned push" and cached.settings["push"]["target"] == "de"


@pytest.mark.parametrize("kwargs, message", [
    (dict(force_language="ja"), r"the push was fitted for 'de', not 'ja'"),
    (dict(mode="diffmean"), r"mode does not apply with a learned push"),
    (dict(strength=float("nan")), r"strength must be a finite number"),
    (dict(suppress="others"), r"suppress 'others' needs neurons or stats"),
])
def test_generate_with_a_push_refuses_what_does_not_apply(tiny, de_push, kwargs, message):
    with pytest.raises(ValueError, match=message):
        steer.generate(tiny, "Hello", push=de_push, max_new_tokens=2, **kwargs)


@pytest.mark.parametrize("change, message", [
    (dict(max_steps=0), r"max_steps must be a whole number of at least 1"),
    (dict(lr=0.0), r"lr must be a finite number above 0"),
    (dict(l2=float("nan")), r"l2 must be a finite number of at least 0"),
    (dict(prompt="question"), r"unknown prompt kind 'question'"),
    (dict(val_fraction=1.0), r"val_fraction must be in \(0, 1\)"),
])
def test_training_settings_are_checked_before_any_work(tiny, parallel, push_neurons, change, message):
    with pytest.raises(ValueError, match=message):
        fit_push(tiny, parallel, "de", neurons=push_neurons, training=PushTraining(**change), progress=False)


def test_fitting_needs_a_parallel_corpus_and_a_known_target(tiny, tiny_corpus, parallel, push_neurons):
    with pytest.raises(ValueError, match="needs a parallel corpus"):
        fit_push(tiny, tiny_corpus, "de", neurons=push_neurons, training=FAST, progress=False)
    with pytest.raises(ValueError, match="the corpus has no language 'fr'"):
        fit_push(tiny, parallel, "fr", neurons=push_neurons, training=FAST, progress=False)


def test_the_loss_with_the_head_on_labelled_rows_only_equals_the_full_one(tiny, parallel, de_push):
    pairs = training_pairs(parallel, "de", ["en", "ja"])[:4]
    ids, attention, labels = _encode(tiny.tokenizer, pairs, 96, spaced=True)
    with torch.no_grad(), steer.intervene(tiny, pushes=[de_push.applied()]):
        fast = continuation_loss(tiny, ids, attention, labels)
        full = _continuation_loss(tiny.original_model(input_ids=ids, attention_mask=attention).logits, labels)
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-5)


def test_pairs_come_from_the_stats_split_and_label_only_the_continuation(tiny, parallel):
    pairs = training_pairs(parallel, "de", ["en"])
    assert {pair.continuation for pair in pairs} <= {" ".join(t.split()[8:]) for t in parallel.stats["de"]}
    assert all(pair.prompt == " ".join(parallel.stats["en"][pair.paragraph].split()[:8]) for pair in pairs)
    ids, attention, labels = _encode(tiny.tokenizer, pairs[:2], 96, spaced=True)
    prompt_len = len(tiny.tokenizer(pairs[0].prompt)["input_ids"])
    assert (labels[0, :prompt_len] == IGNORE).all() and (labels[0, prompt_len:][attention[0, prompt_len:] == 1] != IGNORE).all()


def test_cli_fit_push_then_generate_with_it(tiny_dir, parallel, push_neurons, tmp_path, capsys):
    corpus = parallel.save(tmp_path / "corpus")
    push_neurons.save(tmp_path / "neurons.json")
    argv = ["fit-push", "--model", str(tiny_dir), "--corpus", str(corpus), "--neurons", str(tmp_path / "neurons.json"),
            "--target", "DE", "--steps", "8", "--out", str(tmp_path / "push")]
    assert main(argv) == 0, capsys.readouterr().err
    assert "push for de:" in capsys.readouterr().out
    assert main(["generate", "The cat sits on the", "--model", str(tiny_dir), "--push", str(tmp_path / "push"),
                 "--max-new-tokens", "3"]) == 0, capsys.readouterr().err
    assert "forced de" in capsys.readouterr().out
    assert main([*argv[:-1], str(tmp_path / "corpus")]) == 2  # the output may not overlap an input
    assert "is the input" in capsys.readouterr().err
    assert main(["generate", "The cat", "--model", str(tiny_dir), "--push", "learned"]) == 2
    assert "--push learned needs --force-language" in capsys.readouterr().err


def test_a_residual_stream_vector_is_learned_the_same_way(tiny, tiny_llama, parallel, tmp_path):
    """The steering-vector baseline: one vector after one layer, fitted, saved and applied like a neuron push."""
    push = fit_push(tiny, parallel, "de", residual_layer=1, training=FAST, progress=False)
    assert push.site == "residual" and len(push) == tiny.cfg.d_model and set(push.layers.tolist()) == {1}
    assert push.meta["val_loss"] < push.meta["val_loss_unpushed"]
    assert _held_out_loss(tiny, parallel, push) < _held_out_loss(tiny, parallel)
    loaded = LanguagePush.load(push.save(tmp_path / "resid"), model=tiny)
    assert loaded.site == "residual" and torch.equal(loaded.offsets, push.offsets)
    delta = _change_at(tiny, "blocks.1.hook_resid_post", push.applied())
    torch.testing.assert_close(delta, push.offsets.expand_as(delta), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="residual_layer must be a layer in 0..3"):
        fit_push(tiny, parallel, "de", residual_layer=9, training=FAST, progress=False)
    with pytest.raises(ValueError, match="is for a model with 4 layers"):
        LanguagePush.load(tmp_path / "resid", model=tiny_llama)


def test_the_forced_measurement_takes_learned_pushes_with_their_random_control(tiny, parallel, push_neurons, tmp_path):
    """`forced_language(push=...)` forces each target with its learned push, and the control is pushes learned the
    same way on random neurons (`random_push_name`), judged and resumed like any setting."""
    from steer.bench.forced import forced_language, random_push_name

    stats = steer.collect(tiny, parallel, batch_size=4, progress=False)
    learned = {t: fit_push(tiny, parallel, t, neurons=push_neurons, training=FAST, progress=False) for t in TEXTS}
    control = {t: fit_push(tiny, parallel, t, neurons=push_neurons.random_like(seed=0), training=FAST, progress=False)
               for t in TEXTS}
    words = "one two three four five six seven eight nine ten eleven twelve"
    texts = {lang: [f"{lang} tune {i} {words}" for i in range(6)] + [f"{lang} eval {i} {words}" for i in range(6)]
             for lang in TEXTS}
    kwargs = dict(n_prompts=1, n_baseline=3, n_random=1, max_new_tokens=3, progress=False, push="learned",
                  pushes={"learned": learned, random_push_name("learned", 0): control})
    result = forced_language(tiny, push_neurons, stats, texts, checkpoint=tmp_path / "units.json", **kwargs)
    assert result.setting["push"] == "learned" and result.setting["strength"] == 1.0
    assert result.random is not None and result.random.n == result.n and len(result.random_per_seed) == 1
    diffmean = forced_language(tiny, push_neurons, stats, texts, n_prompts=1, n_baseline=3, n_random=0,
                               max_new_tokens=3, progress=False)
    assert [r["continuation"] for r in result.continuations] != [r["continuation"] for r in diffmean.continuations]
    with pytest.raises(ValueError, match="no learned push 'learned' for ja"):
        forced_language(tiny, push_neurons, stats, texts, **{**kwargs, "pushes": {"learned": {"en": learned["en"],
                                                                                            "de": learned["de"]}}})


def test_bench_forced_with_learned_pushes_fits_once_per_target_and_resumes(tiny_dir, tmp_path, monkeypatch):
    import steer.push_training as training
    from steer.bench import run_bench

    texts = tmp_path / "texts"
    texts.mkdir()
    words = "one two three four five six seven eight nine ten eleven twelve"
    for lang, lines in TEXTS.items():
        (texts / f"{lang}.txt").write_text("\n".join(f"{line} {words}" for line in lines * 6) + "\n", encoding="utf-8")
    config = tmp_path / "bench.toml"
    config.write_text(f'[model]\nname = "{tiny_dir}"\n[corpus]\nsource = "{texts}"\n[stats]\nmax_tokens_per_language = 300\n'
                      '[neurons.s]\nmethod = "specificity"\nn_per_language = 16\n'
                      '[bench.forced]\npush = "learned"\npush_steps = 2\npush_random = 1\nn_prompts = 1\n'
                      'n_baseline = 2\nmax_new_tokens = 3\n')
    fits = []
    real = training.fit_push
    monkeypatch.setattr(training, "fit_push", lambda *a, **k: fits.append(a[2]) or real(*a, **k))
    result = run_bench(config, tmp_path / "out", progress=False)["forced"]
    assert sorted(fits) == sorted(list(TEXTS) * 2)  # each target: the learned push and its random-neuron control
    assert result["setting"]["push"] == "learned" and result["random"] is not None
    assert (tmp_path / "out" / "forced-pushes" / "learned" / "de" / "push.safetensors").is_file()
    (tmp_path / "out" / "forced.json").unlink()  # redo the benchmark: the pushes are read back, not fitted again
    fits.clear()
    again = run_bench(config, tmp_path / "out", progress=False)["forced"]
    assert fits == [] and again["fluent_success"] == result["fluent_success"]


def test_the_learned_push_is_fitted_once_then_read_from_the_cache(tiny, parallel, push_neurons, tmp_path, monkeypatch):
    """generate(push="learned") fits the target's push on its forcing neurons the first time and reads it from
    steer's cache after; the cached push is the one fit_push makes, and generation under it is the same."""
    import steer.push_training as training
    from steer.forcing import learned_push

    monkeypatch.setenv("STEER_HOME", str(tmp_path / "home"))
    fits = []
    real = training.fit_push
    monkeypatch.setattr(training, "fit_push", lambda *a, **k: fits.append(a[2]) or real(*a, **k))
    first = learned_push(tiny, "DE", push_neurons, corpus=parallel, training=FAST, progress=False)
    again = learned_push(tiny, "de", push_neurons, corpus=parallel, training=FAST, progress=False)
    assert fits == ["de"] and torch.equal(first.offsets, again.offsets)
    assert torch.equal(first.offsets, fit_push(tiny, parallel, "de", neurons=push_neurons, training=FAST,
                                               progress=False).offsets)
    assert len(list((tmp_path / "home" / "pushes").iterdir())) == 1
    learned_push(tiny, "de", push_neurons, corpus=parallel, training=PushTraining(**{**FAST.__dict__, "seed": 1}),
                 progress=False)
    assert fits == ["de", "de"]  # other training settings: another push
    stats = steer.collect(tiny, parallel, batch_size=4, progress=False)
    fits.clear()
    out = steer.generate(tiny, ["Open the file."], neurons=push_neurons, stats=stats, force_language="de",
                         push="learned", corpus=parallel, max_new_tokens=4, detect=False, return_logits=True)
    assert len(fits) == 1 and out.settings["push"]["target"] == "de"  # default training: one more fit, cached
    steer.generate(tiny, ["Open the file."], neurons=push_neurons, stats=stats, force_language="de",
                   push="learned", corpus=parallel, max_new_tokens=4, detect=False)
    assert len(fits) == 1
    # neither push nor mode: the learned push is force_language's default (the same push, from the cache); a mode
    # asks for a rule's push instead, with nothing to fit
    default = steer.generate(tiny, ["Open the file."], neurons=push_neurons, stats=stats, force_language="de",
                             corpus=parallel, max_new_tokens=4, detect=False, return_logits=True)
    assert len(fits) == 1 and default.settings["mode"] == "learned push" and default.settings["steps"] is None
    torch.testing.assert_close(default.logits[0], out.logits[0])
    rule = steer.generate(tiny, ["Open the file."], neurons=push_neurons, stats=stats, force_language="de",
                          mode="diffmean", max_new_tokens=4, detect=False)
    assert len(fits) == 1 and rule.settings["mode"] == "diffmean" and rule.settings["push"] is None


@pytest.mark.parametrize("kwargs, message", [
    ({"push": "lerned"}, "push must be a LanguagePush or \"learned\""),
    ({"push": "learned", "mode": "diffmean"}, "mode does not apply with a learned push"),
    ({"push": "learned", "stats": None}, "force_language needs stats .* or neurons .*: the target's neurons its "
                                         "learned push"),
    # the default push is the learned one
    ({"stats": None}, "force_language needs stats .* or neurons .*: the target's neurons its learned push"),
])
def test_the_learned_push_refuses_what_does_not_apply(tiny, push_neurons, kwargs, message):
    with pytest.raises(ValueError, match=message):
        steer.generate(tiny, ["Open the file."], **{"force_language": "de", "stats": None, **kwargs})


def test_a_learned_push_needs_the_target_in_its_corpus(tiny, parallel, push_neurons, tmp_path, monkeypatch):
    from steer.forcing import learned_push

    monkeypatch.setenv("STEER_HOME", str(tmp_path))
    other = steer.Corpus(languages=["en", "ja"], stats={k: parallel.stats[k] for k in ("en", "ja")},
                         eval={k: parallel.eval[k] for k in ("en", "ja")}, ids={}, source="x", parallel=True)
    with pytest.raises(ValueError, match=r"pass a corpus with 'de' \(corpus=, --corpus\), or force with a rule"):
        learned_push(tiny, "de", push_neurons, corpus=other)


def test_a_learned_push_forces_every_step_unless_told_otherwise(tiny, tiny_stats, de_push):
    """steps' default is the push's: the first DEFAULT_STEPS new tokens for a rule's push, every one for a learned
    push (chosen on the tuning half); a given steps wins either way."""
    from steer.bench.forced import Setting
    from steer.forcing import DEFAULT_PUSH_STEPS, DEFAULT_STEPS

    assert DEFAULT_PUSH_STEPS is None and DEFAULT_STEPS == 4
    learned = steer.generate(tiny, ["Open the file."], push=de_push, max_new_tokens=2, detect=False)
    rule = steer.generate(tiny, ["Open the file."], stats=tiny_stats, force_language="de", mode="diffmean",
                          max_new_tokens=2, detect=False)
    given = steer.generate(tiny, ["Open the file."], push=de_push, steps=2, max_new_tokens=2, detect=False)
    assert (learned.settings["steps"], rule.settings["steps"], given.settings["steps"]) == (None, 4, 2)
    assert (Setting(push="learned").steps, Setting().steps, Setting(push="learned", steps=3).steps) == (None, 4, 3)


def test_without_neurons_a_learned_push_takes_the_push_neurons_and_a_rule_the_forcing_neurons(
        tiny, parallel, tmp_path, monkeypatch):
    """Given stats but no neurons, the learned push (force_language's default, and fit_push) is fitted on
    PUSH_NEURONS and a rule pushes FORCING_NEURONS: two specificity sets of different sizes."""
    import steer.forcing as forcing

    monkeypatch.setenv("STEER_HOME", str(tmp_path))
    monkeypatch.setattr(forcing, "PUSH_NEURONS", {"method": "specificity", "n_per_language": 6})
    monkeypatch.setattr(forcing, "FORCING_NEURONS", {"method": "specificity", "n_per_language": 16})
    stats = steer.collect(tiny, parallel, batch_size=4, progress=False)
    learned = steer.generate(tiny, ["Open the file."], stats=stats, force_language="de", corpus=parallel,
                             max_new_tokens=2, detect=False)
    assert learned.settings["push"]["units"] == 6
    assert len(fit_push(tiny, parallel, "de", stats=stats, training=FAST, progress=False)) == 6
    rule = steer.generate(tiny, ["Open the file."], stats=stats, force_language="de", mode="diffmean",
                          max_new_tokens=2, detect=False, return_logits=True)
    for n, same in ((16, True), (6, False)):
        given = steer.generate(tiny, ["Open the file."], stats=stats, force_language="de", mode="diffmean",
                               neurons=steer.identify(stats, method="specificity", n_per_language=n),
                               max_new_tokens=2, detect=False, return_logits=True)
        assert torch.allclose(rule.logits[0], given.logits[0]) == same
