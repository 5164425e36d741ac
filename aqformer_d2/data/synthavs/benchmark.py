"""The SynthAVS of the main job (``make demo``, tools/run_demo_job.py) and of the benchmarks that train on it.

128 x 128 frames (the tiny config's INPUT.IMAGE_SIZE, so no resize at load time), the smallest category
pool (8) and one source 10 dB over the background noise; split sizes are the variant's defaults unless a
caller passes ``n_train`` / ``n_val`` / ``n_test`` to :func:`~.generator.generate_synthavs` beside these.
"""
from typing import Any, Dict

__all__ = ["BENCHMARK_PARAMS"]

BENCHMARK_PARAMS: Dict[str, Any] = dict(variant="both", seed=0, image_size=128, num_categories=8, snr_db=10.0)
