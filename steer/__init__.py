"""steer: find the MLP neurons that carry a language in a decoder LLM and switch them off or up.

    import steer
    model = steer.load_model()                       # embedded Gemma 3 270M
    corpus = steer.load_corpus()                     # LibreOffice help, 10 languages
    stats = steer.collect(model, corpus)             # ActivationStats
    neurons = steer.identify(stats, method="zhang2025")
    with steer.deactivate(model, neurons["fr"]):
        ...
    steer.generate(model, ["Hello"], neurons=neurons, stats=stats, force_language="de")
"""

__version__ = "0.1.0"

from steer.corpus import Corpus, load_corpus  # noqa: E402
from steer.generate import Generation, generate  # noqa: E402
from steer.identify import identify  # noqa: E402
from steer.intervene import Intervention, amplify, deactivate, intervene  # noqa: E402
from steer.langid import detect_language  # noqa: E402
from steer.models import load_model, model_info  # noqa: E402
from steer.neurons import NeuronSet  # noqa: E402
from steer.stats import ActivationStats, collect  # noqa: E402

__all__ = [
    "ActivationStats",
    "Corpus",
    "Generation",
    "Intervention",
    "NeuronSet",
    "__version__",
    "amplify",
    "collect",
    "deactivate",
    "detect_language",
    "generate",
    "identify",
    "intervene",
    "load_corpus",
    "load_model",
    "model_info",
]
