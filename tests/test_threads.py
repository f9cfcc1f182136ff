"""Two threads on one model: a steering acts only in its own thread, and concurrent steer calls are refused."""

from __future__ import annotations

import threading

import pytest
import torch

import steer
from steer.hooks import attached, hook_count

PROMPT = "Die Katze sitzt auf der"


def _logits(model):
    ids = model.tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model.original_model(ids).logits


def test_a_steering_does_not_act_on_another_threads_forward_passes(tiny, tiny_neurons):
    plain = _logits(tiny)
    inside, seen = threading.Event(), threading.Event()
    other: dict = {}

    def plain_forward_elsewhere():
        inside.wait(30)
        other["logits"] = _logits(tiny)  # runs while the steering block below is open
        seen.set()

    worker = threading.Thread(target=plain_forward_elsewhere)
    worker.start()
    with steer.deactivate(tiny, tiny_neurons):
        steered = _logits(tiny)
        inside.set()
        assert seen.wait(60)
    worker.join()
    assert not torch.equal(steered, plain)  # the steering acts in its own thread...
    assert torch.equal(other["logits"], plain)  # ...and not in the other one


def test_a_second_thread_cannot_run_steer_on_a_model_in_use(tiny, tiny_neurons):
    inside, done = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    before = hook_count(tiny)

    def hold():
        with steer.deactivate(tiny, tiny_neurons):
            inside.set()
            done.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    assert inside.wait(30)
    try:
        for call in (lambda: steer.generate(tiny, ["Hello"], max_new_tokens=2),
                     lambda: steer.collect(tiny, {"en": ["Hello there"]}, progress=False),
                     lambda: steer.deactivate(tiny, tiny_neurons).apply()):
            with pytest.raises(RuntimeError, match="in use by another thread"):
                call()
    finally:
        done.set()
        holder.join()
    assert hook_count(tiny) == before
    assert steer.generate(tiny, ["Hello"], max_new_tokens=2).texts  # free again once the block ended


def test_six_threads_generate_in_turn_and_stay_unsteered(tiny, tiny_neurons):
    """Threads that take turns (a lock of their own) all get the plain continuation while one thread steers in between."""
    reference = steer.generate(tiny, [PROMPT], max_new_tokens=6, detect=False).texts
    steered_reference = None
    turn = threading.Lock()
    results: dict[int, list[str]] = {}

    def run(i: int) -> None:
        with turn:
            if i == 0:
                with steer.deactivate(tiny, tiny_neurons):
                    results[i] = steer.generate(tiny, [PROMPT], max_new_tokens=6, detect=False).texts
            else:
                results[i] = steer.generate(tiny, [PROMPT], max_new_tokens=6, detect=False).texts

    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with steer.deactivate(tiny, tiny_neurons):
        steered_reference = steer.generate(tiny, [PROMPT], max_new_tokens=6, detect=False).texts
    assert results[0] == steered_reference != reference
    assert all(results[i] == reference for i in range(1, 6))
