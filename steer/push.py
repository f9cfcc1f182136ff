"""A learned language push: one additive offset per language neuron, fitted so that the model continues in a
target language (`steer.push_training.fit_push`), saved like every steer file and applied through a `Steering`.

Where diffmean pushes every neuron by the same rule (strength × the difference of means), a `LanguagePush`
holds an offset per (layer, neuron) of the target's neurons, added to the down_proj input
act_fn(gate)·up, the same place every steer intervention acts (`site="mlp"`). The usual steering-vector
baseline is the same object at `site="residual"`: one vector added to the residual stream after one layer
(`blocks.{layer}.hook_resid_post`), its "neurons" the residual dimensions.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float, Int
from torch import Tensor

from steer._io import atomic_file, prepare_out, read_safetensors, steer_version, write_json_atomic
from steer.languages import normalise_code
from steer.models import check_model

FORMAT = "steer.LanguagePush"
FORMAT_VERSION = 1
SITES = ("mlp", "residual")
TENSORS_FILE = "push.safetensors"
META_FILE = "push.json"


@dataclass
class LanguagePush:
    """Offsets for the units (`layers[i]`, `neurons[i]`) of a model with `n_layers` layers of `width` units at
    `site` ("mlp": d_mlp neurons of the down_proj input; "residual": d_model dimensions of the residual stream
    after the layer), fitted to move the model's output towards `target`. `meta` records the model, the
    neuron set, the corpus, the training parameters and the learning curve."""

    target: str
    layers: Int[Tensor, " n"]
    neurons: Int[Tensor, " n"]
    offsets: Float[Tensor, " n"]
    n_layers: int
    width: int
    meta: dict = field(default_factory=dict)
    site: str = "mlp"

    def __post_init__(self) -> None:
        self.target = normalise_code(self.target, what="push target")
        if self.site not in SITES:
            raise ValueError(f"unknown push site '{self.site}' (known: {', '.join(SITES)})")
        self.layers = torch.as_tensor(self.layers).to(torch.long).reshape(-1)
        self.neurons = torch.as_tensor(self.neurons).to(torch.long).reshape(-1)
        self.offsets = torch.as_tensor(self.offsets).detach().to(torch.float32).reshape(-1)
        if not len(self.layers) == len(self.neurons) == len(self.offsets):
            raise ValueError(f"a push needs one layer, neuron and offset per entry, got {len(self.layers)}, "
                             f"{len(self.neurons)} and {len(self.offsets)}")
        if len(self.layers) == 0:
            raise ValueError(f"a push for '{self.target}' needs at least one neuron")
        if int(self.layers.min()) < 0 or int(self.layers.max()) >= self.n_layers:
            raise ValueError(f"a push layer is outside 0..{self.n_layers - 1}")
        if int(self.neurons.min()) < 0 or int(self.neurons.max()) >= self.width:
            raise ValueError(f"a push unit index is outside 0..{self.width - 1}")
        if not torch.isfinite(self.offsets).all():
            raise ValueError("a push holds non-finite offsets; fit it again")

    def __len__(self) -> int:
        return len(self.offsets)

    def per_layer(self) -> dict[int, tuple[Int[Tensor, " k"], Float[Tensor, " k"]]]:
        """layer -> (neuron indices, offsets) for every layer the push touches."""
        return {int(layer): (self.neurons[self.layers == layer], self.offsets[self.layers == layer])
                for layer in torch.unique(self.layers)}

    def check_model(self, model, what: str = "this language push") -> None:
        """A clear error when the push was fitted on another model (shape or weights); one that records no
        model is refused too."""
        from steer.models import model_info

        info = model_info(model)
        d_mlp = self.width if self.site == "mlp" else info.d_mlp  # a residual push checks d_model below
        check_model({**self.meta.get("model", {}), "n_layers": self.n_layers, "d_mlp": d_mlp}, model, what,
                    require_record=True)
        if self.site == "residual" and self.width != int(model.cfg.d_model):
            raise ValueError(f"{what} is for a residual stream of {self.width} dimensions, but '{info.name}' has "
                             f"{int(model.cfg.d_model)}; use a push fitted on this model")

    def applied(self, *, scale: float = 1.0, phase: str = "all", steps: int | None = None) -> "AppliedPush":
        """This push as a `Steering` applies it (`steer.intervene(model, pushes=[push.applied(...)])`)."""
        return AppliedPush(self, scale, phase, steps)

    # ------------------------------------------------------------------ I/O
    def save(self, path: str | Path) -> Path:
        """Write the folder `path` (the output rule of `steer._io.prepare_out`, verb fit-push): the offsets in
        push.safetensors (with the metadata in its header) and a readable push.json."""
        from safetensors.torch import save_file

        path = prepare_out(path, "fit-push", option="path")
        meta = self.header()
        tensors = {"layers": self.layers.contiguous(), "neurons": self.neurons.contiguous(),
                   "offsets": self.offsets.contiguous()}
        with atomic_file(path / TENSORS_FILE) as tmp:
            save_file(tensors, str(tmp), metadata={"format": FORMAT, "meta": json.dumps(meta, ensure_ascii=False)})
        write_json_atomic(path / META_FILE, meta)
        return path

    def header(self) -> dict:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "steer_version": steer_version(),
                "target": self.target, "site": self.site, "n_layers": self.n_layers, "width": self.width,
                "n_units": len(self),
                **self.meta}

    @classmethod
    def load(cls, path: str | Path, model=None) -> "LanguagePush":
        """Read a folder written by `save`; with `model`, check the push was fitted on that model."""
        path = Path(path)
        file = path / TENSORS_FILE if path.is_dir() else path
        if not file.is_file():
            raise ValueError(f"'{path}' holds no language push ({TENSORS_FILE}); make one with `steer fit-push`")
        header, tensors = read_safetensors(file, "fit the push again")
        if header.get("format") != FORMAT:
            raise ValueError(f"'{file}' is not a steer language push; make one with `steer fit-push`")
        try:
            meta = json.loads(header["meta"])
            version = int(meta.get("format_version", 0))
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"'{file}' has a damaged header; fit the push again") from None
        if version > FORMAT_VERSION:
            raise ValueError(f"'{file}' was written by a newer steer (push format {version}); upgrade steer")
        missing = [name for name in ("layers", "neurons", "offsets") if name not in tensors]
        if missing:
            raise ValueError(f"'{file}' has no {missing[0]} tensor; the file is damaged: fit the push again")
        own = ("format", "format_version", "steer_version", "target", "site", "n_layers", "width", "n_units")
        try:
            push = cls(meta["target"], tensors["layers"], tensors["neurons"], tensors["offsets"], int(meta["n_layers"]),
                       int(meta["width"]), {key: value for key, value in meta.items() if key not in own},
                       meta.get("site", "mlp"))
        except (KeyError, ValueError) as error:
            raise ValueError(f"'{file}' is damaged ({error}); fit the push again") from None
        if model is not None:
            push.check_model(model, what=f"language push '{path}'")
        return push


@dataclass(frozen=True)
class AppliedPush:
    """A push as a steering applies it: its offsets × `scale`, at the positions of `phase`, for `steps` new
    tokens (None: every step; the conventions of `steer.steering.Intervention`)."""

    push: LanguagePush
    scale: float = 1.0
    phase: str = "all"
    steps: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)) or not math.isfinite(self.scale):
            raise ValueError(f"a push's scale must be a finite number, got {self.scale!r}")
