"""Shared fixtures: tiny random models (built in a second), a small multilingual corpus, stats on them."""

from __future__ import annotations

import pytest
import torch

import steer
from steer.testing import tiny_model_dir

TEXTS = {
    "en": ["The cat sits on the mat and looks out of the window.", "Open the file menu and choose save as.",
           "This function returns the sum of the values.", "Select the cells you want to format."],
    "de": ["Die Katze sitzt auf der Matte und schaut aus dem Fenster.", "Öffnen Sie das Menü Datei und wählen Sie.",
           "Diese Funktion gibt die Summe der Werte zurück.", "Wählen Sie die Zellen aus, die Sie formatieren."],
    "ja": ["猫はマットの上に座って窓の外を見ています。", "ファイルメニューを開いて保存を選びます。",
           "この関数は値の合計を返します。", "書式設定するセルを選択します。"],
}


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="session")
def tiny_dir(tiny_root):
    return tiny_model_dir("gemma3", root=tiny_root)


@pytest.fixture(scope="session")
def tiny(tiny_dir):
    return steer.load_model(tiny_dir)


@pytest.fixture(scope="session")
def tiny_llama(tiny_root):
    return steer.load_model(tiny_model_dir("llama", root=tiny_root))


@pytest.fixture(scope="session")
def tiny_corpus():
    return steer.Corpus(languages=list(TEXTS), stats={k: v[:3] for k, v in TEXTS.items()},
                        eval={k: v[3:] for k, v in TEXTS.items()}, ids={}, source="test", parallel=False)


@pytest.fixture(scope="session")
def tiny_stats(tiny, tiny_corpus):
    return steer.collect(tiny, tiny_corpus, batch_size=2, progress=False)


@pytest.fixture(scope="session")
def tiny_neurons(tiny_stats):
    return steer.identify(tiny_stats, method="zhang2025", top_rate=0.05)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models are dominated by thread start-up: on a busy 2-core machine one thread is much faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def gemma():
    return steer.load_model()


def pytest_collection_modifyitems(items):
    torch.set_num_threads(max(1, torch.get_num_threads()))
