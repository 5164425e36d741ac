"""Shared pytest set-up: import the plugin once (registers components) and keep torch on 1 thread per worker."""
import torch

import aqformer_d2  # noqa: F401

torch.set_num_threads(1)
