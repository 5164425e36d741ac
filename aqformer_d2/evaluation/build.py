"""Evaluator registry: a dataset's ``evaluator_type`` (MetadataCatalog) -> its evaluator builder and
the result the trainer tracks for the best checkpoint."""
from __future__ import annotations

from typing import Callable, Dict, NamedTuple, Optional

from detectron2.data import MetadataCatalog

from .avs_evaluator import build_avs_evaluator
from .avss_evaluator import avss_result_key, build_avss_evaluator

__all__ = ["EvaluatorEntry", "register_aq_evaluator", "build_aq_evaluator", "best_metric_name"]


class EvaluatorEntry(NamedTuple):
    """build(cfg, dataset_name, output_dir) -> DatasetEvaluator; best_metric(cfg) -> "task/metric"."""

    build: Callable
    best_metric: Callable


_EVALUATORS: Dict[str, EvaluatorEntry] = {}


def register_aq_evaluator(evaluator_type: str, build: Callable, best_metric: Callable) -> None:
    """Register the evaluator of datasets whose metadata says ``evaluator_type``."""
    if evaluator_type in _EVALUATORS:
        raise KeyError(f"An evaluator for evaluator_type {evaluator_type!r} is already registered.")
    _EVALUATORS[evaluator_type] = EvaluatorEntry(build, best_metric)


def _entry(dataset_name: str) -> EvaluatorEntry:
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
    if evaluator_type not in _EVALUATORS:
        raise ValueError(
            f"Dataset '{dataset_name}' has evaluator_type {evaluator_type!r}; registered evaluator types: "
            f"{sorted(_EVALUATORS)}"
        )
    return _EVALUATORS[evaluator_type]


def build_aq_evaluator(cfg, dataset_name: str, output_dir: Optional[str] = None):
    """The evaluator registered for ``dataset_name``'s evaluator_type."""
    return _entry(dataset_name).build(cfg, dataset_name, output_dir)


def best_metric_name(cfg, dataset_name: str) -> str:
    """The result the best-checkpoint hook tracks for ``dataset_name`` (e.g. "avs/mIoU", "avss_official/mIoU")."""
    return _entry(dataset_name).best_metric(cfg)


register_aq_evaluator("avs", build_avs_evaluator, lambda cfg: "avs/mIoU")
register_aq_evaluator("avss", build_avss_evaluator, lambda cfg: f"{avss_result_key(cfg.TEST.AVSS_PROTOCOL)}/mIoU")
