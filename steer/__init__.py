"""steer: find the MLP neurons that carry a language in a decoder LLM and switch them off or up."""

__version__ = "0.1.0"

from steer.models import load_model, model_info  # noqa: E402

__all__ = ["load_model", "model_info", "__version__"]
