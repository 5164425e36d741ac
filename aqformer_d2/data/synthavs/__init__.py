"""SynthAVS: a synthetic audio-visual segmentation benchmark in the exact AVSBench on-disk layout.

See docs/synthavs.md. Entry points: :func:`generate_synthavs` (writes a dataset) and
:func:`synthesize_clip` (one clip in memory, identical to the one written); :data:`BENCHMARK_PARAMS`, the
parameters of the main job's SynthAVS.
"""
from .benchmark import BENCHMARK_PARAMS
from .generator import (
    CLIPS_METADATA_NAME,
    DEFAULT_SPLIT_SIZES,
    FORMAT_VERSION,
    MANIFEST_NAME,
    MAX_CATEGORIES,
    MIN_CATEGORIES,
    SynthClip,
    category_names,
    clip_name,
    generate_synthavs,
    synthesize_clip,
)

__all__ = [
    "BENCHMARK_PARAMS",
    "CLIPS_METADATA_NAME",
    "DEFAULT_SPLIT_SIZES",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "MAX_CATEGORIES",
    "MIN_CATEGORIES",
    "SynthClip",
    "category_names",
    "clip_name",
    "generate_synthavs",
    "synthesize_clip",
]
