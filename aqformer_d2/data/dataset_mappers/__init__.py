"""Dataset mappers (registered in AQ_DATASET_MAPPER_REGISTRY)."""
from .build import AQ_DATASET_MAPPER_REGISTRY, build_aq_dataset_mapper
from .avs_clip_mapper import AUDIO_EXAMPLE_SHAPE, AVSClipMapper, build_avs_augmentations, load_audio_examples
from .avss_clip_mapper import AVSSClipMapper

__all__ = [
    "AQ_DATASET_MAPPER_REGISTRY",
    "AUDIO_EXAMPLE_SHAPE",
    "AVSClipMapper",
    "AVSSClipMapper",
    "build_aq_dataset_mapper",
    "build_avs_augmentations",
    "load_audio_examples",
]
