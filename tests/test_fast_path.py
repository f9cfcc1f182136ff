"""The fast path against the bridge: one test per documented behaviour or gap (see steer.models.fast_path),
and how steer's hooks and TransformerLens' own hooks see each other (see steer.hooks)."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest
import torch

import steer
from steer.hooks import attached, hook_count
from steer.models.fast_path import fast_path
from steer.neurons import NeuronSet
from steer.testing import tiny_model_dir

IDS_TEXT = ["Hallo Welt, wie geht es?", "日本語のテキスト"]
SWAPPED = "blocks.3.attn.hook_pattern"  # nothing hooks layer 3's attention: it runs as plain HF
REFUSED = f"hook added to {SWAPPED} inside steer's fast_path, where that component runs as plain HF"


@pytest.fixture(scope="module")
def tiny_gpt2(tiny_root):
    return steer.load_model(tiny_model_dir("gpt2", root=tiny_root))


@pytest.fixture(scope="module")
def handmade(tiny, tiny_stats):
    membership = torch.zeros(3, 4, 128, dtype=torch.bool)
    membership[1, 1, [7, 20]] = True
    membership[1, 3, 5] = True
    membership[2, 2, :10] = True
    return NeuronSet(tiny_stats.languages, membership, meta={"model": tiny_stats.meta["model"]})


def _ids(model):
    return model.tokenizer(IDS_TEXT, return_tensors="pt", padding=True)


def _layers(model):
    hf = model.original_model
    return list(hf.transformer.h if hasattr(hf, "transformer") else hf.model.layers)


def _snapshot(model):
    """What a block must leave as it found it: layer types, attention implementation, hooks, guards."""
    points = {id(p): p for p in model.hook_dict.values()}.values()
    return ([type(layer) for layer in _layers(model)], model.original_model.config._attn_implementation,
            hook_count(model), sum(len(p.fwd_hooks) + len(p.bwd_hooks) for p in points),
            sum("register_forward_hook" in m.__dict__ for m in model.modules()))


def _unique_points(model, keep):
    seen, points = set(), []
    for name, point in model.hook_dict.items():
        if keep(name) and id(point) not in seen:
            seen.add(id(point))
            points.append((name, point))
    return points


def _run_both(model, register):
    """Logits and the recorded values without and with the fast path, with `register(record)` attached first."""
    records = {"bridge": [], "fast": []}
    current = []
    handle = register(lambda value: current.append(value.detach().clone() if isinstance(value, torch.Tensor) else value))
    try:
        with torch.no_grad():
            current = records["bridge"]
            bridged = model.original_model(**_ids(model)).logits
            current = records["fast"]
            with fast_path(model):
                fast = model.original_model(**_ids(model)).logits
    finally:
        handle.remove()
    return bridged, fast, records["bridge"], records["fast"]


def _assert_same(bridged, fast, seen_bridge, seen_fast, name):
    assert len(seen_fast) == len(seen_bridge), name
    for a, b in zip(seen_bridge, seen_fast):
        if isinstance(a, torch.Tensor):
            torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4, msg=name)
    torch.testing.assert_close(fast, bridged, atol=1e-4, rtol=1e-4, msg=name)


@pytest.mark.parametrize("arch", ["gemma3", "llama", "gpt2", "arch:opt", "arch:gemma2"])
def test_a_hook_attached_before_entering_fires_as_on_the_bridge(arch, tiny_root, one_thread):
    """Every hook point of a layer (and outside the layers) fires as often, on the same values, and its
    edit reaches the logits the same way, with and without the fast path."""
    model = steer.load_model(tiny_model_dir(arch, root=tiny_root))
    points = _unique_points(model, lambda n: (n.startswith("blocks.1.") or not n.startswith("blocks."))
                            and not n.endswith("attn.qkv.hook_in") and not n.endswith("attn.qkv.hook_out"))
    assert len(points) > 40
    fired = 0
    for name, point in points:
        def register(record, point=point):
            def hook(activation, hook):
                record(activation)
                return activation * 1.5 if name.endswith("mlp.hook_post") else None
            point.add_hook(hook)
            return SimpleNamespace(remove=lambda: point.remove_hooks("both"))
        result = _run_both(model, register)
        _assert_same(*result, name)
        fired += bool(result[2])
    assert fired > 0.8 * len(points)  # a few points never fire, on the bridge either (rotary_emb.hook_out)


def test_a_block_kept_on_a_fresh_model_runs_and_its_own_hooks_keep_nothing(tiny_root, one_thread):
    """A hook on a block's residual output keeps that block a bridge; on a model whose blocks never ran as bridges,
    the block's first forward wires TransformerLens' capture hooks on its parts, which the fast path guards:
    it must run all the same (a learned residual push on a freshly loaded model did not). Those capture hooks
    are TransformerLens' own: once wired, they keep no part out of the fast path."""
    model = steer.load_model(tiny_model_dir("gemma3", root=tiny_root))
    ids = torch.tensor([[2, 10, 20, 30]])
    seen = []
    with attached(model, [("blocks.1.hook_resid_post", lambda x: seen.append(x.detach().clone()))]):
        with fast_path(model), torch.no_grad():
            fast = model.original_model(input_ids=ids).logits
        with torch.no_grad():
            bridged = model.original_model(input_ids=ids).logits  # every block a bridge
    torch.testing.assert_close(fast, bridged, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(seen[0], seen[1], atol=1e-4, rtol=1e-4)
    layers = model.original_model.model.layers
    with fast_path(model):  # wired now, and nothing hooked: every part runs as plain HF again
        assert not any(type(module).__module__.startswith("transformer_lens") for module in layers[1].modules())


def test_gap_gpt2_joint_qkv_fires_only_on_the_fast_path(tiny_gpt2):
    """Documented gap: TransformerLens' joint-QKV attention never runs `attn.qkv`; HF's attention does."""
    point = tiny_gpt2.hook_dict["blocks.1.attn.qkv.hook_out"]
    _, _, seen_bridge, seen_fast = _run_both(tiny_gpt2, lambda record: point.register_forward_hook(
        lambda m, i, o: record(o)))
    assert (len(seen_bridge), len(seen_fast)) == (0, 1)


def test_gpt2_split_projections_keep_their_attention(tiny_gpt2):
    """q/k/v/o exist only inside TransformerLens' GPT-2 attention: a hook on them keeps that attention."""
    point = tiny_gpt2.hook_dict["blocks.1.attn.hook_z"]
    result = _run_both(tiny_gpt2, lambda record: point.register_forward_hook(lambda m, i, o: record(o)))
    assert result[2]
    _assert_same(*result, "hook_z")
    layers = tiny_gpt2.original_model.transformer.h
    with attached(tiny_gpt2, [("blocks.1.attn.hook_z", lambda x: None)]), fast_path(tiny_gpt2):
        assert [type(layer.attn).__name__ for layer in layers[:3]] == [
            "GPT2Attention", "JointQKVAttentionBridge", "GPT2Attention"]


@pytest.mark.parametrize("kind", ["pre", "module", "submodule"])
def test_a_pre_hook_or_a_hook_on_a_bridge_component_keeps_it(tiny, kind):
    """Forward pre-hooks on hook points, and hooks on a bridge component itself (not a hook point),
    keep that component: they fire as on the bridge instead of never."""
    block = tiny.blocks[1]
    if kind == "pre":
        point = tiny.hook_dict["blocks.1.attn.hook_pattern"]
        register = lambda record: point.register_forward_pre_hook(lambda m, args: record(args[0]))  # noqa: E731
    else:
        module = block if kind == "module" else block.mlp
        register = lambda record: module.register_forward_hook(  # noqa: E731
            lambda m, i, o: record(o[0] if isinstance(o, tuple) else o))
    result = _run_both(tiny, register)
    assert result[2]
    _assert_same(*result, kind)


def test_a_backward_hook_attached_before_entering_fires(tiny):
    """A backward hook on a hook point keeps its component: it sees the same gradient as on the bridge."""
    point = tiny.hook_dict["blocks.1.mlp.hook_post"]
    grads = []
    handle = point.add_hook(lambda grad, hook: grads.append(grad.detach().clone()), dir="bwd")
    try:
        tiny.original_model(**_ids(tiny)).logits.sum().backward()
        with fast_path(tiny):
            tiny.original_model(**_ids(tiny)).logits.sum().backward()
    finally:
        point.remove_hooks(dir="bwd")
        tiny.original_model.zero_grad(set_to_none=True)
    assert len(grads) == 2 and not handle.is_permanent
    torch.testing.assert_close(grads[1], grads[0], atol=1e-4, rtol=1e-4)


DOORS = {
    "steer attached": lambda model, fn: attached(model, [(SWAPPED, fn)]).__enter__(),
    "TL model.add_hook": lambda model, fn: model.add_hook(SWAPPED, lambda x, hook: fn(x)),
    "TL model.hooks": lambda model, fn: model.hooks(fwd_hooks=[(SWAPPED, lambda x, hook: fn(x))]).__enter__(),
    "TL run_with_hooks": lambda model, fn: model.run_with_hooks(_ids(model)["input_ids"],
                                                                fwd_hooks=[(SWAPPED, lambda x, hook: fn(x))]),
    "HookPoint.add_hook bwd": lambda model, fn: model.hook_dict[SWAPPED].add_hook(lambda g, hook: fn(g), dir="bwd"),
    "torch forward hook": lambda model, fn: model.hook_dict[SWAPPED].register_forward_hook(lambda m, i, o: fn(o)),
    "torch pre-hook": lambda model, fn: model.hook_dict[SWAPPED].register_forward_pre_hook(lambda m, a: fn(a)),
    "torch backward hook": lambda model, fn: model.hook_dict[SWAPPED].register_full_backward_hook(
        lambda m, gi, go: fn(go)),
}


@pytest.mark.parametrize("door", list(DOORS))
def test_a_hook_added_inside_to_a_swapped_point_raises(tiny, door):
    """A hook added inside the block to a point whose component runs as plain HF would never fire:
    every way of adding one raises a one-line error instead, and the model is restored afterwards."""
    before = _snapshot(tiny)
    fired = []
    with attached(tiny, [("blocks.2.mlp.hook_post", lambda x: None)]):
        with pytest.raises(RuntimeError, match=REFUSED) as error:
            with fast_path(tiny):
                DOORS[door](tiny, fired.append)
    assert "\n" not in str(error.value)
    assert _snapshot(tiny) == before
    with attached(tiny, [(SWAPPED, fired.append)]), torch.no_grad():
        tiny.original_model(**_ids(tiny))
    assert len(fired) == 1  # outside the fast path the same point takes hooks again


def test_a_hook_added_inside_to_a_bridge_component_that_was_swapped_raises(tiny):
    """Inside the block `model.blocks[3].mlp` is the HF module that runs (hooks on it fire); the bridge
    component held from before entering does not run, and hooking it raises."""
    bridge = tiny.blocks[3].mlp
    fired = []
    with fast_path(tiny), torch.no_grad():
        with pytest.raises(RuntimeError, match="hook added to blocks.3.mlp inside steer's fast_path"):
            bridge.register_forward_hook(lambda m, i, o: None)
        handle = tiny.blocks[3].mlp.register_forward_hook(lambda m, i, o: fired.append(o))
        try:
            tiny.original_model(**_ids(tiny))
        finally:
            handle.remove()
    assert len(fired) == 1 and tiny.blocks[3].mlp is bridge


def test_a_hook_added_inside_to_a_point_that_runs_works(tiny):
    name = "blocks.2.mlp.hook_post"
    outer, inner = [], []
    with attached(tiny, [(name, outer.append)]), fast_path(tiny), torch.no_grad():
        with attached(tiny, [(name, inner.append)]), tiny.hooks(fwd_hooks=[(name, lambda x, hook: inner.append(x))]):
            tiny.original_model(**_ids(tiny))
    assert len(outer) == 1 and len(inner) == 2


def test_nested_fast_paths_restore_the_model(tiny):
    before = _snapshot(tiny)
    with fast_path(tiny):
        inside = _snapshot(tiny)
        with fast_path(tiny):
            assert _snapshot(tiny) == inside
        assert _snapshot(tiny) == inside
    assert _snapshot(tiny) == before


def test_steer_hooks_are_transformer_lens_hooks_for_the_block(tiny, handmade):
    """steer's hooks show in `hook_point.fwd_hooks` and `model.list_hooks()` while the block is open,
    and are gone after it."""
    name = "blocks.1.mlp.hook_post"
    point = tiny.hook_dict[name]
    assert not point.fwd_hooks and not tiny.list_hooks()
    with steer.deactivate(tiny, handmade):
        assert len(point.fwd_hooks) == 1
        listed = tiny.list_hooks(dir="fwd")
        assert {n for n in listed if n.startswith("blocks.")} >= {f"blocks.{layer}.mlp.hook_post" for layer in (1, 2, 3)}
        assert "blocks.0.mlp.hook_post" not in listed  # layer 0 has no neuron: no hook
        assert "steer[blocks.1.mlp.hook_post]" in point.fwd_hooks[0].user_hook.__qualname__
        assert hook_count(tiny) == 3
    assert not point.fwd_hooks and not tiny.list_hooks() and hook_count(tiny) == 0


def test_user_transformer_lens_hooks_and_steer_hooks_both_fire_in_order(tiny, handmade):
    """Hooks on one point fire in the order they were added (torch's rule): a TransformerLens hook added
    before the steering sees the activation before it, one added inside the block sees it after."""
    name = "blocks.1.mlp.hook_post"
    seen = {}

    def record(key):
        def hook(x, hook):
            seen.setdefault(key, x[..., [7, 20]].clone())
        return hook

    ids = _ids(tiny)["input_ids"]
    with torch.no_grad(), tiny.hooks(fwd_hooks=[(name, record("before"))]):
        with steer.deactivate(tiny, handmade["de"]):
            with tiny.hooks(fwd_hooks=[(name, record("after"))]):
                assert hook_count(tiny) == 4  # layers 1 and 3 for de, and two of the user's
                tiny.original_model(ids)
        assert hook_count(tiny) == 1
    assert hook_count(tiny) == 0
    assert seen["before"].abs().sum() > 0 and seen["after"].abs().sum() == 0


def test_user_hooks_fire_inside_steer_generate(tiny, handmade):
    """generate attaches its hooks and then enters the fast path: the user's TL hooks, added before, still fire."""
    fired = []
    with tiny.hooks(fwd_hooks=[("blocks.0.mlp.hook_pre", lambda x, hook: fired.append(x.shape))]):
        steer.generate(tiny, ["The cat"], interventions=[steer.Intervention("suppress")], neurons=handmade,
                       max_new_tokens=3, detect=False)
    assert len(fired) == 3  # one forward per new token


def test_reset_hooks_inside_a_steering_keeps_the_steering(tiny, handmade):
    """`model.reset_hooks()` clears the user's hooks; steer's (registered as permanent for the length of the
    block) stay until the block ends, so a steering never switches off silently halfway."""
    name = "blocks.1.mlp.hook_post"
    mine = []
    with steer.deactivate(tiny, handmade["de"]):
        tiny.add_hook(name, lambda x, hook: mine.append(1))
        assert hook_count(tiny) == 3
        tiny.reset_hooks()
        assert hook_count(tiny) == 2
        seen = []
        with attached(tiny, [(name, lambda x: seen.append(x[..., [7, 20]].clone()))]), torch.no_grad():
            tiny.original_model(_ids(tiny)["input_ids"])
        assert not mine and seen[0].abs().sum() == 0
    assert hook_count(tiny) == 0


def test_reset_hooks_including_permanent_inside_a_steering_warns(tiny, handmade):
    with pytest.warns(UserWarning, match="steer's hooks on .* were removed inside their block"):
        with steer.deactivate(tiny, handmade["de"]):
            tiny.reset_hooks(including_permanent=True)
    assert hook_count(tiny) == 0 and not tiny.list_hooks()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with steer.deactivate(tiny, handmade["de"]):
            pass


def test_after_an_exception_the_model_has_exactly_its_hooks(tiny, handmade):
    name = "blocks.2.mlp.hook_post"
    with tiny.hooks(fwd_hooks=[(name, lambda x, hook: None)]), attached(tiny, [("blocks.0.mlp.hook_pre", lambda x: None)]):
        before = _snapshot(tiny)
        with pytest.raises(RuntimeError, match="boom"):
            with steer.deactivate(tiny, handmade), fast_path(tiny):
                assert hook_count(tiny) == before[2] + 3
                raise RuntimeError("boom")
        assert _snapshot(tiny) == before
        with pytest.raises(ValueError, match="no hook point 'blocks.9.mlp.hook_pre'"):
            with attached(tiny, [("blocks.1.mlp.hook_pre", lambda x: None), ("blocks.9.mlp.hook_pre", lambda x: None)]):
                pass
        assert _snapshot(tiny) == before
    assert hook_count(tiny) == 0


def test_transformer_lens_refuses_a_gated_point_through_steer_too(tiny):
    """steer asks TransformerLens' own check: a gated-off point (that would never fire) is an error."""
    with pytest.raises(ValueError, match="use_attn_result"):
        with attached(tiny, [("blocks.0.attn.hook_result", lambda x: None)]):
            pass
    assert hook_count(tiny) == 0


@pytest.mark.parametrize("arch, inside", [("gemma2", "eager"), ("bloom", "eager"), ("gemma3", "sdpa")])
def test_the_fast_path_keeps_attention_that_sdpa_cannot_compute(arch, inside, tiny_root, tiny_corpus, one_thread):
    """Gemma 2's attention-logit soft-capping has no SDPA kernel (transformers raises "`sdpa` attention does
    not support `softcap`"), and BLOOM's ALiBi attention gives other logits under SDPA: the fast path keeps
    their own attention, switches the others to SDPA, and gives the bridge's logits; collect runs."""
    model = steer.load_model(tiny_model_dir(f"arch:{arch}", root=tiny_root))
    hf = model.original_model
    seen = []
    with attached(model, [("blocks.1.mlp.hook_post", lambda x: seen.append(hf.config._attn_implementation))]):
        bridged, fast, _, _ = _run_both(model, lambda record: SimpleNamespace(remove=lambda: None))
    assert seen == ["eager", inside] and hf.config._attn_implementation == "eager"
    torch.testing.assert_close(fast, bridged, atol=1e-5, rtol=1e-5)
    stats = steer.collect(model, tiny_corpus, batch_size=2, progress=False)
    assert stats.active.sum() > 0 and stats.tokens.min() > 0
