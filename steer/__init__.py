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

from steer._version import __version__
from steer.collection import collect
from steer.corpus import Corpus, load_corpus
from steer.generation import Generation, generate
from steer.identification import identify
from steer.langid import detect_language
from steer.models import load_model, model_info
from steer.neurons import NeuronSet
from steer.push import LanguagePush
from steer.push_training import PushTraining, fit_push
from steer.stats import ActivationStats
from steer.steering import ExpertMask, Intervention, amplify, deactivate, intervene

__all__ = [
    "ActivationStats",
    "Corpus",
    "ExpertMask",
    "Generation",
    "Intervention",
    "LanguagePush",
    "NeuronSet",
    "PushTraining",
    "__version__",
    "amplify",
    "collect",
    "deactivate",
    "detect_language",
    "fit_push",
    "generate",
    "identify",
    "intervene",
    "load_corpus",
    "load_model",
    "model_info",
]
