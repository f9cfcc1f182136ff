"""Activation statistics: parity with a plain-torch reference, batching, padding, BOS, response-only,
merging, two-process torch.distributed, checkpoint/resume, save/load and model checks."""

from __future__ import annotations


from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

import steer
from steer.hooks import attached, hook_count
from steer.collection import checkpoint_file
from steer.stats import ActivationStats

from conftest import TEXTS


def _reference_counts(folder, texts_by_language, include_bos=False):
    """Counts with a plain HF model and torch hooks on gate_proj / down_proj, one text at a time."""
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    layers = model.model.layers
    active = torch.zeros(len(texts_by_language), len(layers), layers[0].mlp.gate_proj.out_features, dtype=torch.long)
    sums = torch.zeros(active.shape, dtype=torch.float64)
    tokens = torch.zeros(len(texts_by_language), dtype=torch.long)
    for k, texts in enumerate(texts_by_language.values()):
        for text in texts:
            ids = tokenizer(text, return_tensors="pt")["input_ids"]
            start = 0 if include_bos else 1
            handles = []
            for layer, block in enumerate(layers):
                def gate(module, inputs, output, layer=layer):
                    active[k, layer] += (output[0, start:] > 0).sum(0)

                def down(module, inputs, layer=layer):
                    sums[k, layer] += inputs[0][0, start:].double().sum(0)

                handles += [block.mlp.gate_proj.register_forward_hook(gate),
                            block.mlp.down_proj.register_forward_pre_hook(down)]
            with torch.no_grad():
                model(ids)
            for handle in handles:
                handle.remove()
            tokens[k] += ids.shape[1] - start
    return active, sums, tokens


def test_counts_equal_a_plain_torch_reference(tiny, tiny_dir):
    stats = steer.collect(tiny, TEXTS, batch_size=3, progress=False)
    active, sums, tokens = _reference_counts(tiny_dir, TEXTS)
    assert torch.equal(stats.tokens, tokens)
    assert torch.equal(stats.active, active)
    torch.testing.assert_close(stats.sums, sums, rtol=1e-4, atol=1e-3)


def _gathered_float64_counts(model, texts, batch_size):
    """The reduction collect used before the matmul one: gather the counted rows, cast to float64, sum."""
    from steer.collection import plan_batches
    from steer.models import decoder
    from steer.stats import ActivationStats

    info = steer.model_info(model)
    stats = ActivationStats.zeros(list(texts), info.n_layers, info.d_mlp, sq_sums=True)
    batches = plan_batches(model.tokenizer, texts, list(texts), batch_size=batch_size, max_length=256, include_bos=False)
    state = {}

    def count(layer):
        def hook(x):
            rows = x.reshape(-1, x.shape[-1]).index_select(0, state["rows"])
            stats.active[state["k"], layer] += (rows > 0).sum(0)
        return hook

    def add(layer):
        def hook(x):
            rows = x.reshape(-1, x.shape[-1]).index_select(0, state["rows"]).double()
            stats.sums[state["k"], layer] += rows.sum(0)
            stats.sq_sums[state["k"], layer] += rows.square().sum(0)
        return hook

    hooks = [(info.site.activation_hook(layer), count(layer)) for layer in range(info.n_layers)]
    hooks += [(info.site.down_input_hook(layer), add(layer)) for layer in range(info.n_layers)]
    with torch.inference_mode(), attached(model, hooks):
        for batch in batches:
            state.update(k=batch.language, rows=batch.count_mask.reshape(-1).nonzero().squeeze(1))
            decoder(model)(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
            stats.tokens[batch.language] += int(batch.count_mask.sum())
    return stats


@pytest.mark.parametrize("batching", [dict(batch_size=3), dict(tokens_per_batch=120), dict(batch_size=2, tokens_per_batch=90)])
def test_matmul_reductions_equal_the_gathered_float64_path(tiny, batching):
    stats = steer.collect(tiny, TEXTS, sq_sums=True, progress=False, **batching)
    reference = _gathered_float64_counts(tiny, TEXTS, batch_size=1)
    assert torch.equal(stats.tokens, reference.tokens)
    assert torch.equal(stats.active, reference.active)
    scale = reference.sums.abs().max()
    torch.testing.assert_close(stats.sums, reference.sums, rtol=1e-6, atol=1e-6 * float(scale))
    torch.testing.assert_close(stats.sq_sums, reference.sq_sums, rtol=1e-6, atol=1e-6 * float(reference.sq_sums.max()))


def test_token_budget_bounds_every_batch(tiny):
    from steer.collection import plan_batches

    texts = {lang: items * 4 for lang, items in TEXTS.items()}
    batches = plan_batches(tiny.tokenizer, texts, list(texts), batch_size=None, tokens_per_batch=200, max_length=256,
                           include_bos=False)
    assert all(b.input_ids.numel() <= 200 or b.input_ids.shape[0] == 1 for b in batches)
    assert sum(int(b.count_mask.sum()) for b in batches) == sum(
        int(b.count_mask.sum()) for b in plan_batches(tiny.tokenizer, texts, list(texts), batch_size=1, max_length=256,
                                                      include_bos=False))
    assert max(b.input_ids.shape[0] for b in batches) > 1


def test_batched_counts_equal_one_text_at_a_time(tiny):
    batched = steer.collect(tiny, TEXTS, batch_size=4, progress=False)
    single = steer.collect(tiny, TEXTS, batch_size=1, progress=False)
    assert torch.equal(batched.active, single.active) and torch.equal(batched.tokens, single.tokens)
    torch.testing.assert_close(batched.sums, single.sums, rtol=1e-5, atol=1e-4)


def test_pads_never_count_and_bos_is_optional(tiny):
    text = {"en": ["short", "a much longer text that forces padding of the short one"]}
    n_bytes = sum(len(t.encode()) for t in text["en"])
    assert int(steer.collect(tiny, text, batch_size=2, progress=False).tokens[0]) == n_bytes
    with_bos = steer.collect(tiny, text, batch_size=2, include_bos=True, progress=False)
    assert int(with_bos.tokens[0]) == n_bytes + 2


def test_response_only_counts_only_the_responses(tiny):
    pairs = {"de": [("Translate: cat", " Katze"), ("Translate: dog", " Hund und Katze")]}
    stats = steer.collect(tiny, pairs, batch_size=2, progress=False)
    assert int(stats.tokens[0]) == len(" Katze".encode()) + len(" Hund und Katze".encode())
    assert stats.meta["params"]["response_only"] is True
    assert int(stats.active.max()) <= int(stats.tokens[0])


def test_merge_of_disjoint_parts_equals_the_union(tiny):
    first = {lang: texts[:2] for lang, texts in TEXTS.items()}
    second = {lang: texts[2:] for lang, texts in TEXTS.items() if lang != "ja"}
    merged = steer.collect(tiny, first, progress=False) + steer.collect(tiny, second, progress=False)
    union = steer.collect(tiny, {lang: first[lang] + second.get(lang, []) for lang in TEXTS}, progress=False)
    assert merged.languages == union.languages
    assert torch.equal(merged.active, union.active) and torch.equal(merged.tokens, union.tokens)


def _distributed_worker(rank, world, init_file, folder, out):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model = steer.load_model(folder)
        stats = steer.collect(model, TEXTS, batch_size=1, progress=False)
        if rank == 0:
            stats.save(out)
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_shard_and_all_reduce(tiny, tiny_dir, tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_distributed_worker, args=(2, str(tmp_path / "init"), str(tiny_dir), str(tmp_path / "dist")), nprocs=2)
    distributed = ActivationStats.load(tmp_path / "dist")
    single = steer.collect(tiny, TEXTS, batch_size=1, progress=False)
    assert distributed.meta["world_size"] == 2
    assert torch.equal(distributed.active, single.active) and torch.equal(distributed.tokens, single.tokens)


def test_interrupted_collection_resumes_without_double_counting(tiny, tmp_path):
    full = steer.collect(tiny, TEXTS, batch_size=1, progress=False)
    calls = {"n": 0}

    def interrupt(activation):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt

    hooks_before = hook_count(tiny)
    with pytest.raises(KeyboardInterrupt), attached(tiny, [("blocks.0.mlp.hook_pre", interrupt)]):
        steer.collect(tiny, TEXTS, batch_size=1, checkpoint=tmp_path / "ckpt", checkpoint_every=2, progress=False)
    assert hook_count(tiny) == hooks_before
    partial = ActivationStats.load_file(checkpoint_file(tmp_path / "ckpt"))
    assert 0 < partial.meta["done_batches"] < 9
    resumed = steer.collect(tiny, TEXTS, batch_size=1, checkpoint=tmp_path / "ckpt", checkpoint_every=2, progress=False)
    assert torch.equal(resumed.active, full.active) and torch.equal(resumed.tokens, full.tokens)
    assert "done_batches" not in resumed.meta


def test_a_kill_while_writing_a_checkpoint_keeps_the_previous_one(tiny, tmp_path, monkeypatch):
    """The checkpoint is one file replaced in one rename: a crash mid-write leaves the last good one."""
    import safetensors.torch

    full = steer.collect(tiny, TEXTS, batch_size=1, progress=False)
    real_save = safetensors.torch.save_file
    writes = {"n": 0}

    def dying_save(tensors, filename, metadata=None):
        writes["n"] += 1
        if writes["n"] == 2:  # the second checkpoint: half a file, then the process "dies"
            Path(filename).write_bytes(b"\0" * 100)
            raise KeyboardInterrupt
        return real_save(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", dying_save)
    with pytest.raises(KeyboardInterrupt):
        steer.collect(tiny, TEXTS, batch_size=1, checkpoint=tmp_path / "ckpt", checkpoint_every=2, progress=False)
    monkeypatch.setattr(safetensors.torch, "save_file", real_save)
    kept = ActivationStats.load_file(checkpoint_file(tmp_path / "ckpt"))
    assert kept.meta["done_batches"] == 2
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["rank0.safetensors"]
    resumed = steer.collect(tiny, TEXTS, batch_size=1, checkpoint=tmp_path / "ckpt", checkpoint_every=2, progress=False)
    assert torch.equal(resumed.active, full.active) and torch.equal(resumed.tokens, full.tokens)
    torch.testing.assert_close(resumed.sums, full.sums, rtol=1e-9, atol=1e-9)


def test_resuming_with_sq_sums_after_a_run_without_them_is_refused(tiny, tmp_path):
    steer.collect(tiny, TEXTS, batch_size=1, checkpoint=tmp_path / "ckpt", progress=False)
    with pytest.raises(ValueError, match="without sq_sums"):
        steer.collect(tiny, TEXTS, batch_size=1, sq_sums=True, checkpoint=tmp_path / "ckpt", progress=False)


def test_a_checkpoint_from_another_plan_is_refused(tiny, tmp_path):
    steer.collect(tiny, TEXTS, batch_size=1, checkpoint=tmp_path / "ckpt", progress=False)
    with pytest.raises(ValueError, match=r"does not match this run \(changed: .*batch plan\)"):
        steer.collect(tiny, TEXTS, batch_size=2, checkpoint=tmp_path / "ckpt", progress=False)


def test_save_load_roundtrip_and_wrong_model(tiny, tiny_llama, tiny_stats, tmp_path):
    tiny_stats.save(tmp_path / "stats")
    loaded = ActivationStats.load(tmp_path / "stats", model=tiny)
    assert torch.equal(loaded.active, tiny_stats.active) and loaded.languages == tiny_stats.languages
    assert loaded.meta["model"]["weights_hash"] == steer.model_info(tiny).weights_hash
    with pytest.raises(ValueError, match="4 layers × 128 neurons.*3 × 128"):
        ActivationStats.load(tmp_path / "stats", model=tiny_llama)


def test_from_counts_validates(tiny_stats):
    stats = ActivationStats.from_counts(["aa", "bb"], torch.tensor([[[1, 2]], [[0, 3]]]), torch.tensor([4, 3]))
    torch.testing.assert_close(stats.probs(), torch.tensor([[[0.25, 0.5]], [[0.0, 1.0]]]))
    with pytest.warns(UserWarning, match=r"1 neuron counts exceed .*by up to 1 tokens"):
        clipped = ActivationStats.from_counts(["aa"], torch.tensor([[[5, 2]]]), torch.tensor([4]))
    assert clipped.active.tolist() == [[[4, 2]]]
    with pytest.raises(ValueError, match="non-negative"):
        ActivationStats.from_counts(["aa"], torch.tensor([[[-1]]]), torch.tensor([4]))
    with pytest.raises(ValueError, match="active > tokens"):  # a file or a direct construction is not clipped
        ActivationStats(["aa"], torch.tensor([[[5]]]), torch.tensor([4]))
    with pytest.raises(ValueError, match="2 languages but active has 1"):
        ActivationStats.from_counts(["aa", "bb"], torch.tensor([[[1]]]), torch.tensor([4, 4]))


def test_bad_collect_inputs(tiny):
    with pytest.raises(ValueError, match="no language"):
        steer.collect(tiny, TEXTS, languages=["xx"], progress=False)
    with pytest.raises(ValueError, match="no tokens"):
        steer.collect(tiny, {"en": [""]}, progress=False)


def test_collect_leaves_no_hooks_and_restores_attention(tiny):
    before = hook_count(tiny)
    steer.collect(tiny, {"en": TEXTS["en"][:1]}, progress=False)
    assert hook_count(tiny) == before
    assert tiny.original_model.config._attn_implementation == "eager"


@pytest.mark.integration
def test_gemma_batched_counts_equal_single(gemma):
    """Padding never counts: the same tokens, and the same activity up to float32 rounding. A padded batch runs
    other kernel shapes than one text alone, so an activation within rounding of 0 can land on the other side
    (measured: 5 of 110,592 counts, by 1, on de/ja/km); a padding bug moves thousands."""
    corpus = steer.load_corpus().subset(languages=["de", "ja", "km"], max_stats=4)
    batched = steer.collect(gemma, corpus, batch_size=4, progress=False)
    single = steer.collect(gemma, corpus, batch_size=1, progress=False)
    assert torch.equal(batched.tokens, single.tokens)
    differ = (batched.active - single.active).abs()
    assert int(differ.max()) <= 1 and int((differ > 0).sum()) <= 1e-4 * differ.numel(), int((differ > 0).sum())
    torch.testing.assert_close(batched.sums, single.sums, atol=1e-2, rtol=1e-3)


def test_stds_are_the_population_standard_deviation_per_language():
    x = torch.randn(2, 50, 3, 4, dtype=torch.float64) * torch.tensor([1.0, 3.0])[:, None, None, None]
    stats = ActivationStats.zeros(["en", "de"], 3, 4, sq_sums=True)
    stats.tokens[:] = 50
    stats.sums[:] = x.sum(1)
    stats.sq_sums[:] = x.square().sum(1)
    torch.testing.assert_close(stats.stds(), x.std(1, unbiased=False).float(), atol=1e-5, rtol=1e-5)
    stats.sq_sums = None
    with pytest.raises(ValueError, match="sq_sums=True"):
        stats.stds()
