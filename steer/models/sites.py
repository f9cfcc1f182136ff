"""Where a language neuron lives in each architecture family, as TransformerLens hook-point templates.

A *neuron* is one coordinate of ``act_fn(gate)`` in an MLP (Tang et al. 2024). Two hook points
matter per layer:

- ``activation``: the gate pre-activation. ``act_fn(x) > 0`` exactly when ``x > 0`` for SiLU, GELU,
  GELU-tanh and ReLU, so counting ``x > 0`` here counts the papers' "active" tokens.
- ``down_input``: the input of ``down_proj`` (``act_fn(gate) * up`` in a gated MLP, ``act_fn(pre)``
  in a plain one). Interventions act here: for one neuron, scaling or zeroing this coordinate is the
  same as doing it to ``act_fn(gate)``.
"""

from __future__ import annotations

from dataclasses import dataclass

SIGN_PRESERVING_ACTIVATIONS = frozenset(
    {"gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh", "gelu_tanh", "silu", "swish", "relu"}
)


@dataclass(frozen=True)
class NeuronSite:
    """Where the neurons of one architecture family live, as TransformerLens hook-point templates."""

    family: str
    model_types: tuple[str, ...]
    activation: str = "blocks.{layer}.mlp.hook_pre"
    down_input: str = "blocks.{layer}.mlp.hook_post"
    gated: bool = True
    act_config_keys: tuple[str, ...] = ("hidden_activation", "hidden_act", "activation_function")

    def activation_hook(self, layer: int) -> str:
        return self.activation.format(layer=layer)

    def down_input_hook(self, layer: int) -> str:
        return self.down_input.format(layer=layer)


SITES: dict[str, NeuronSite] = {
    site.family: site
    for site in (
        NeuronSite("gemma", ("gemma", "gemma2", "gemma3", "gemma3_text")),
        NeuronSite("llama", ("llama", "mistral", "qwen2", "qwen3", "olmo", "olmo2", "granite")),
        NeuronSite("gpt2", ("gpt2",), gated=False),
        NeuronSite("bloom", ("bloom",), gated=False),
    )
}


def site_for_model_type(model_type: str) -> NeuronSite:
    for site in SITES.values():
        if model_type in site.model_types:
            return site
    known = ", ".join(sorted(t for s in SITES.values() for t in s.model_types))
    raise ValueError(
        f"architecture '{model_type}' is not supported by steer (known: {known}); "
        "add a NeuronSite entry to steer.models.SITES naming its MLP hook points"
    )



def check_activation(config, site: NeuronSite) -> None:
    for key in site.act_config_keys:
        act = getattr(config, key, None)
        if act is not None:
            if act not in SIGN_PRESERVING_ACTIVATIONS:
                raise ValueError(
                    f"activation '{act}' is not sign-preserving, so 'act_fn(gate) > 0' cannot be read "
                    "from the gate pre-activation; add a NeuronSite whose activation hook is after act_fn"
                )
            return
