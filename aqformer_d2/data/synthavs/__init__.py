"""SynthAVS: a synthetic audio-visual segmentation benchmark written in AVSBench's on-disk layouts.

See docs/synthavs.md. Entry points: :func:`generate_synthavs` (AVSBench-object layout, S4 / MS3),
:func:`generate_synthavs_semantic` (AVSBench-semantic layout, v1s / v1m / v2-like subsets) and
:func:`synthesize_clip` (one clip in memory, identical to the one written); :data:`BENCHMARK_PARAMS`, the
parameters of the main job's SynthAVS.
"""
from .benchmark import BENCHMARK_PARAMS
from .clip import CLIP_KINDS, MAX_CATEGORIES, MIN_CATEGORIES, SynthClip, category_names, clip_name, synthesize_clip
from .generator import CLIPS_METADATA_NAME, DEFAULT_SPLIT_SIZES, FORMAT_VERSION, MANIFEST_NAME, generate_synthavs
from .semantic import (
    SEMANTIC_DEFAULT_SPLIT_SIZES,
    SEMANTIC_FORMAT_VERSION,
    SEMANTIC_MANIFEST_NAME,
    generate_synthavs_semantic,
    semantic_class_names,
)

__all__ = [
    "BENCHMARK_PARAMS",
    "CLIP_KINDS",
    "CLIPS_METADATA_NAME",
    "DEFAULT_SPLIT_SIZES",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "MAX_CATEGORIES",
    "MIN_CATEGORIES",
    "SEMANTIC_DEFAULT_SPLIT_SIZES",
    "SEMANTIC_FORMAT_VERSION",
    "SEMANTIC_MANIFEST_NAME",
    "SynthClip",
    "category_names",
    "clip_name",
    "generate_synthavs",
    "generate_synthavs_semantic",
    "semantic_class_names",
    "synthesize_clip",
]
