"""Data: AVSBench-layout datasets (AVSBench, SynthAVS), the SynthAVS generator and dataset mappers.

Importing this package registers the datasets under their default roots and the dataset mappers.
This package never imports :mod:`aqformer_d2.modeling`.
"""
from . import dataset_mappers, datasets  # noqa: F401  (registration)
from .dataset_mappers import AQ_DATASET_MAPPER_REGISTRY, AVSClipMapper, build_aq_dataset_mapper
from .datasets import register_all_avsbench_from_cfg, register_all_avss_from_cfg, register_all_synthavs_from_cfg

__all__ = [
    "AQ_DATASET_MAPPER_REGISTRY", "AVSClipMapper", "build_aq_dataset_mapper", "register_avs_datasets_from_cfg",
]


def register_avs_datasets_from_cfg(cfg) -> None:
    """Re-register AVSBench, AVSBench-semantic, SynthAVS and SynthAVS-semantic with the roots and audio
    source given by ``cfg`` (``DATASETS.AVS_ROOT``, ``DATASETS.AVSS_ROOT``, ``DATASETS.SYNTHAVS_ROOT``,
    ``DATASETS.SYNTHAVS_AVSS_ROOT``, ``INPUT.AUDIO.SOURCE``)."""
    register_all_avsbench_from_cfg(cfg)
    register_all_avss_from_cfg(cfg)
    register_all_synthavs_from_cfg(cfg)
