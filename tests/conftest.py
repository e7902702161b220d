"""Shared test setup: quiet progress bars, a throw-away cache, tiny models, VGG16.

Environment (set at import time, so notebook kernels started later by other
tests inherit it too):
- ``LAB_PROGRESS=0``: no progress bars in test output or stored notebooks;
- ``LAB_CACHE_DIR``: a session-wide temporary folder, unless the caller set one,
  so tests never read results cached by an earlier run (or by a student);
- ``LAB_CHOICE_FILE``: a session-wide lab choice file, so a student's
  ``lab-choice.yaml`` never changes what the tests (and nbval) see.

Real-weight tests use the ``vgg16`` fixture: they are skipped when the VGG16
weights file is missing, but *fail* when ``LAB_REQUIRE_WEIGHTS=1`` (CI sets it
where the shared weights exist, so a broken path cannot turn into a silent skip).
"""
from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
import pytest

os.environ["LAB_PROGRESS"] = "0"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
_OWN_CACHE = None
if not os.environ.get("LAB_CACHE_DIR"):
    _OWN_CACHE = tempfile.mkdtemp(prefix="lab-test-cache-")
    os.environ["LAB_CACHE_DIR"] = _OWN_CACHE


# The student's lab choice (lab-choice.yaml at the kit's root) must not change what tests
# see: every session starts from the kit's defaults in a file of its own.
_OWN_CHOICE = tempfile.mkdtemp(prefix="lab-test-choice-")
os.environ["LAB_CHOICE_FILE"] = os.path.join(_OWN_CHOICE, "lab-choice.yaml")


def pytest_sessionfinish(session, exitstatus):
    if _OWN_CACHE:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)
    shutil.rmtree(_OWN_CHOICE, ignore_errors=True)


# ------------------------------------------------------------------ weights
def weights_required() -> bool:
    return os.environ.get("LAB_REQUIRE_WEIGHTS", "").strip().lower() in ("1", "true", "yes", "on")


def find_weights(name: str = "vgg16"):
    """The first existing offline weights file for ``name`` (conv base), or None."""
    from lab_utils.models import weight_candidates

    for path in weight_candidates(name):
        if path.is_file():
            return path
    return None


def require_weights(name: str = "vgg16"):
    """Path of the weights file; skip the test without it, or fail if LAB_REQUIRE_WEIGHTS=1."""
    from lab_utils.models import weight_candidates

    path = find_weights(name)
    if path is None:
        tried = ", ".join(str(p) for p in weight_candidates(name))
        msg = f"{name} ImageNet weights not found (tried: {tried}); set LAB_WEIGHTS_DIR"
        if weights_required():
            pytest.fail(f"LAB_REQUIRE_WEIGHTS=1 but {msg}", pytrace=False)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def vgg16():
    """The real VGG16 conv base with ImageNet weights (loaded once per session)."""
    require_weights("vgg16")
    import lab_utils

    return lab_utils.load_model("vgg16")


# ------------------------------------------------------------------ tiny models
def build_tiny(seed: int = 0, c2_padding: str = "valid"):
    """Input(None, None, 3) -> c1 (4, 3x3, relu, same) -> p1 (max pool) -> c2 (6) -> c3 (5).

    Weights are deterministic (seeded numpy, set explicitly); ``_lab_name`` is
    vgg16 so the model uses VGG preprocessing.
    """
    import keras

    inp = keras.Input((None, None, 3), name="image")
    x = keras.layers.Conv2D(4, 3, activation="relu", padding="same", name="c1")(inp)
    x = keras.layers.MaxPooling2D(name="p1")(x)
    x = keras.layers.Conv2D(6, 3, activation="relu", padding=c2_padding, name="c2")(x)
    x = keras.layers.Conv2D(5, 3, activation="relu", padding="same", name="c3")(x)
    model = keras.Model(inp, x, name="tiny")
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            k = rng.normal(0, 0.05, layer.kernel.shape).astype("float32")
            b = rng.normal(0, 0.5, layer.bias.shape).astype("float32")
            layer.set_weights([k, b])
    model._lab_name = "vgg16"
    return model


@pytest.fixture
def tiny_model():
    """A fresh tiny conv model (function scope: tests may change its weights)."""
    return build_tiny()


@pytest.fixture
def make_tiny():
    return build_tiny


@pytest.fixture
def probe_images():
    """Nine deterministic random RGB uint8 images, 24x24."""
    return np.random.default_rng(123).integers(0, 256, (9, 24, 24, 3), dtype=np.uint8)


@pytest.fixture
def cache_tmp(tmp_path, monkeypatch):
    """A private, empty LAB_CACHE_DIR for one test."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("LAB_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def clear_model_cache():
    """load_model's lru_cache is emptied before and after the test."""
    from lab_utils import models

    cached = models._load_cached  # the real one, even if a test monkeypatches it
    cached.cache_clear()
    yield
    cached.cache_clear()


# ------------------------------------------------------------------ lab hand-ins (grading tests)
def kit_notebook(step: int) -> dict:
    """The kit's stored notebook of lab step *step* (with its reference outputs), as JSON."""
    import json
    from pathlib import Path

    from lab_utils.evidence import STEP_NOTEBOOKS

    root = Path(__file__).resolve().parent.parent
    return json.loads((root / "notebooks" / f"{STEP_NOTEBOOKS[step]}.ipynb").read_text())


def filled_notebook(step: int, answer: str, names: str = "Ada Lovelace, Alan Turing") -> dict:
    """``kit_notebook(step)`` as a student hands it in: every answer placeholder replaced by
    *answer*, the names placeholder (notebook 01) by *names*."""
    from lab_utils import evidence as E

    nb = kit_notebook(step)
    for cell in nb["cells"]:
        src = E._source(cell)
        if cell["cell_type"] == "markdown" and E.PLACEHOLDER in src:
            cell["source"] = src.replace(E.PLACEHOLDER, answer)
        if cell["cell_type"] == "markdown" and E.NAMES_PLACEHOLDER in src:
            cell["source"] = src.replace(E.NAMES_PLACEHOLDER, names)
    return nb
