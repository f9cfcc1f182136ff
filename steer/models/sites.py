"""Where a language neuron lives in an architecture, as TransformerLens hook-point templates.

A *neuron* is one coordinate of ``act_fn(gate)`` in an MLP (Tang et al. 2024). Two hook points
matter per layer:

- ``activation``: where "active" is counted (``x > 0``). For a sign-preserving activation
  (``act_fn(x) > 0`` exactly when ``x > 0``: SiLU, GELU, GELU-tanh, ReLU, ...) that is the gate
  pre-activation, ``blocks.{l}.mlp.hook_pre``. For any other activation in a plain MLP it is the
  down-projection input (``act_fn(pre)`` itself), counted after ``act_fn``.
- ``down_input``: the input of the down projection, ``blocks.{l}.mlp.hook_post`` (``act_fn(gate) * up``
  in a gated MLP, ``act_fn(pre)`` in a plain one). Sums and interventions act here: for one neuron,
  scaling or zeroing this coordinate is the same as doing it to ``act_fn(gate)``.

The site is derived from the bridge (`site_for`) wherever its MLP component names both points the
same way (TransformerLens' ``MLPBridge``, ``GatedMLPBridge``, ``JointGateUpMLPBridge``: gated or plain,
fused gate/up, MLPs that sit on the decoder layer, parallel attention+MLP blocks alike). `SITES`
holds explicit entries only where the bridge or the config does not tell (BLOOM's and MPT's
activations are hard-coded, not in their configs). `REFUSED` names the architectures steer refuses, with the reason.
A mixture-of-experts MLP (`MOE_MODEL_TYPES`: the bridge's ``MoEBridge``) has no hook point per expert
neuron: its site is marked ``experts`` and its neurons are tapped on the HF experts
(`steer.models.experts`); other MoE architectures are refused by name.
To add an architecture the bridge cannot describe: add a `NeuronSite` to `SITES` naming its hook
points and activation, and its tiny configuration to `steer.testing.ARCH_CONFIGS` (the
parametrised proof in tests/test_architectures.py then runs on it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from steer.models.experts import MOE_MODEL_TYPES, expert_layout, is_moe

SIGN_PRESERVING_ACTIVATIONS = frozenset(
    {"gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh", "gelu_tanh", "gelu_python", "gelu_accurate", "gelu_10",
     "quick_gelu", "bloom_gelu", "silu", "swish", "relu", "relu2", "relu6", "leaky_relu", "elu", "selu", "mish", "tanh"}
)
ACT_CONFIG_KEYS = ("hidden_activation", "hidden_act", "activation_function", "activation")
PRE = "blocks.{layer}.mlp.hook_pre"
POST = "blocks.{layer}.mlp.hook_post"
EXPERT_CONFIG_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")


@dataclass(frozen=True)
class NeuronSite:
    """Where the neurons of one architecture live, as TransformerLens hook-point templates."""

    family: str
    model_types: tuple[str, ...]
    activation: str = PRE
    down_input: str = POST
    gated: bool = True
    act_config_keys: tuple[str, ...] = ACT_CONFIG_KEYS
    act_fn: str | None = None  # the activation, where the config does not name it
    parallel: bool = False  # attention and MLP read the same residual (GPT-NeoX, Falcon, Cohere)
    derived: bool = False  # read from the bridge, not an explicit entry
    experts: bool = False  # a mixture-of-experts MLP: neurons are tapped per expert (steer.models.experts), not hooked

    def activation_hook(self, layer: int) -> str:
        self._no_expert_hook_points()
        return self.activation.format(layer=layer)

    def down_input_hook(self, layer: int) -> str:
        self._no_expert_hook_points()
        return self.down_input.format(layer=layer)

    def _no_expert_hook_points(self) -> None:
        if self.experts:
            raise ValueError(f"'{self.family}' is a mixture-of-experts model: its expert neurons have no hook point (steer "
                             "taps the experts, steer.models.experts.tapped), and this use of a neuron hook point is not "
                             "supported on it yet")


SITES: dict[str, NeuronSite] = {
    site.family: site
    for site in (
        # BloomGelu is hard-coded in BloomMLP (no activation key in BloomConfig); it is GELU's tanh form.
        NeuronSite("bloom", ("bloom",), gated=False, act_fn="bloom_gelu"),
        # MptMLP hard-codes nn.GELU (MptConfig names no activation).
        NeuronSite("mpt", ("mpt",), gated=False, act_fn="gelu"),
    )
}

MOE_REASON = (
    "a mixture-of-experts MLP that steer has not proven: its neurons are (layer, expert, index) and the bridge's "
    "blocks.{l}.mlp.hook_pre is the whole MoE block's input; steer taps the experts of "
    + ", ".join(MOE_MODEL_TYPES)
)
REFUSED: dict[str, str] = {}  # model_type -> why steer refuses it (filled where the proof cannot pass)


def _refusal(model_type: str, reason: str) -> ValueError:
    return ValueError(f"architecture '{model_type}' is not supported by steer: {reason}")


def explicit_site(model_type: str) -> NeuronSite | None:
    """The explicit `SITES` entry for a model type, if it has one."""
    return next((site for site in SITES.values() if model_type in site.model_types), None)


def configured_activation(config, site: NeuronSite | None = None) -> str | None:
    """The MLP activation named by the config (or by the explicit site), None where neither tells."""
    if site is not None and site.act_fn is not None:
        return site.act_fn
    for key in site.act_config_keys if site is not None else ACT_CONFIG_KEYS:
        act = getattr(config, key, None)
        if isinstance(act, str):
            return act
    return None


def check_config(config) -> None:
    """Refuse, before any weight is loaded, what the config alone shows steer cannot handle (one-line ValueError)."""
    model_type = config.model_type
    if model_type in REFUSED:
        raise _refusal(model_type, REFUSED[model_type])
    if getattr(config, "is_encoder_decoder", False):
        raise _refusal(model_type, "an encoder-decoder model; steer finds neurons in decoder-only LMs (a decoder "
                                   "whose MLP the bridge does not name needs a NeuronSite entry in steer.models.SITES)")
    if any((getattr(config, key, None) or 0) > 1 for key in EXPERT_CONFIG_KEYS) and model_type not in MOE_MODEL_TYPES:
        raise _refusal(model_type, MOE_REASON)
    site = explicit_site(model_type)
    act = configured_activation(config, site)
    if site is not None and act is not None and act not in SIGN_PRESERVING_ACTIVATIONS and site.activation == PRE:
        raise _refusal(model_type, f"activation '{act}' is not sign-preserving, so 'act_fn(gate) > 0' cannot be read "
                                   "from the gate pre-activation; its NeuronSite must count after act_fn")


def site_for(model) -> NeuronSite:
    """The neuron site of a `TransformerBridge`: its explicit `SITES` entry, else read from the bridge.

    Raises a one-line ValueError naming the architecture and the reason where steer cannot tell (or
    refuses) where its neurons are, rather than loading it half-working.
    """
    from transformer_lens.model_bridge.generalized_components import GatedMLPBridge, MLPBridge

    hf_config = model.original_model.config
    config = getattr(hf_config, "text_config", None) or hf_config
    model_type = config.model_type
    check_config(config)
    explicit = explicit_site(model_type)
    n_layers = int(model.cfg.n_layers)
    if model_type in MOE_MODEL_TYPES and is_moe(model):
        return _moe_site(model, config, model_type)
    blocks = getattr(model, "blocks", None)
    mlps = [getattr(block, "mlp", None) for block in blocks] if blocks is not None else []
    if len(mlps) != n_layers or not all(isinstance(mlp, MLPBridge) for mlp in mlps):
        kinds = sorted({type(mlp).__name__ for mlp in mlps if mlp is not None})
        if any("MoE" in kind for kind in kinds):
            raise _refusal(model_type, MOE_REASON)
        what = f"'s MLP component is {', '.join(kinds)}," if kinds else " has no MLP component in some layer,"
        raise _refusal(model_type, f"the bridge{what} not an MLP whose hook_pre and hook_post are the neurons; "
                                   "add a NeuronSite entry to steer.models.SITES")
    gated = explicit.gated if explicit is not None else isinstance(mlps[0], GatedMLPBridge)
    act = configured_activation(config, explicit)
    if act is None:
        raise _refusal(model_type, f"its config names no MLP activation ({', '.join(ACT_CONFIG_KEYS)}); add a "
                                   "NeuronSite entry with act_fn to steer.models.SITES")
    site = explicit or NeuronSite(model_type, (model_type,), gated=gated, derived=True)
    if act not in SIGN_PRESERVING_ACTIVATIONS:
        if gated:
            raise _refusal(model_type, f"activation '{act}' is not sign-preserving and the MLP is gated: the bridge "
                                       "names no hook point after act_fn, so an active neuron cannot be counted")
        site = replace(site, activation=site.down_input)  # a plain MLP's down-projection input is act_fn(pre)
    site = replace(site, parallel=bool(getattr(model.cfg, "parallel_attn_mlp", False)))
    points = model.hook_dict
    missing = [name for layer in range(n_layers) for name in (site.activation_hook(layer), site.down_input_hook(layer))
               if name not in points]
    if missing:
        raise _refusal(model_type, f"the bridge has no hook point '{missing[0]}'; add a NeuronSite entry naming its "
                                   "MLP hook points to steer.models.SITES")
    return site


def _moe_site(model, config, model_type: str) -> NeuronSite:
    """A mixture-of-experts site: counted on each expert's gate pre-activation (act_fn must be sign-preserving),
    acted on at each expert's down-projection input, through `steer.models.experts.tapped`."""
    act = configured_activation(config)
    if act not in SIGN_PRESERVING_ACTIVATIONS:
        raise _refusal(model_type, f"its experts' activation '{act}' is not sign-preserving, so an active expert "
                                   "neuron cannot be read from the gate pre-activation")
    expert_layout(model, lambda reason: _refusal(model_type, reason))
    where = "blocks.{layer}.mlp (experts tapped)"
    return NeuronSite(model_type, (model_type,), activation=where, down_input=where, gated=True, derived=True,
                      experts=True)


def moe_layout(model):
    """The `ExpertLayout` of a MoE bridge, None for a dense one."""
    if not is_moe(model):
        return None
    model_type = (getattr(model.original_model.config, "text_config", None) or model.original_model.config).model_type
    return expert_layout(model, lambda reason: _refusal(model_type, reason))


def mlp_width(model) -> int:
    """Neurons per layer: the down projection's input width (the bridge's cfg.d_mlp is 4 × d_model for some
    architectures whatever their config says: OPT, XGLM, Falcon)."""
    layout = moe_layout(model)
    if layout is not None:
        return layout.d_mlp
    out = getattr(model.blocks[0].mlp, "out", None)
    module = getattr(out, "original_component", None)
    width = getattr(module, "in_features", None)
    if width is None and getattr(module, "nf", None) is not None:  # transformers' Conv1D: weight [in, out]
        width = module.weight.shape[0]
    return int(width if width is not None else model.cfg.d_mlp)
