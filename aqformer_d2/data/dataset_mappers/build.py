"""Registry of AQFormer dataset mappers and the builder the trainer calls."""
from detectron2.utils.registry import Registry

from ...utils.registry import lookup

__all__ = ["AQ_DATASET_MAPPER_REGISTRY", "build_aq_dataset_mapper"]

AQ_DATASET_MAPPER_REGISTRY = Registry("AQ_DATASET_MAPPER")
AQ_DATASET_MAPPER_REGISTRY.__doc__ = """
Registry for dataset mappers that turn an AVSBench-layout dataset dict into the clip dict of
docs/interfaces.md. A registered class is called as ``cls(cfg, is_train)``.
"""


def build_aq_dataset_mapper(cfg, is_train: bool):
    """Build the mapper named ``cfg.INPUT.DATASET_MAPPER_NAME`` (default "AVSClipMapper")."""
    name = cfg.INPUT.DATASET_MAPPER_NAME
    mapper_cls = lookup(AQ_DATASET_MAPPER_REGISTRY, name, config_key="INPUT.DATASET_MAPPER_NAME", what="dataset mapper",
                        register_with="@AQ_DATASET_MAPPER_REGISTRY.register() (from aqformer_d2.data.dataset_mappers)")
    return mapper_cls(cfg, is_train)
