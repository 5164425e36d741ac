"""SynthAVS: a synthetic audio-visual segmentation benchmark in the exact AVSBench on-disk layout.

See docs/synthavs.md. Entry points: :func:`generate_synthavs` (writes a dataset) and
:func:`synthesize_clip` (one clip in memory, identical to the one written).
"""
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
