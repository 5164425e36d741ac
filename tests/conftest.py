"""Shared pytest set-up: import the plugin once (registers components) and keep torch on 1 thread per worker."""
import pytest
import torch

import aqformer_d2  # noqa: F401

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory):
    """A tiny AQFormer trained for a few dozen iterations on a small SynthAVS-S4 (tests/inference/trained.py);
    about 10-20 s, once per test session (per xdist worker)."""
    from tests.inference.trained import train_tiny

    return train_tiny(str(tmp_path_factory.mktemp("trained_tiny")))
