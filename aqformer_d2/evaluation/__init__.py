"""AVSBench evaluation (M_J, M_F). Never imports aqformer_d2.modeling."""
from .avs_evaluator import PER_VIDEO_JSON, PNG_DIR, AVSEvaluator, build_avs_evaluator
from .listening import (
    ListeningEvaluator,
    bootstrap_interval,
    false_positive_rate,
    foreground_per_frame,
    listening_score,
    mean_foreground_area,
)
from .metrics import (
    FSCORE_BETA2,
    FSCORE_NUM_THRESHOLDS,
    IOU_EPS,
    binarize,
    fscore_curve_from_counts,
    fscore_curves_per_frame,
    fscore_per_video,
    fscore_thresholds,
    mask_iou_per_frame,
    miou_per_video,
    threshold_counts,
)

__all__ = [
    "AVSEvaluator",
    "ListeningEvaluator",
    "bootstrap_interval",
    "false_positive_rate",
    "foreground_per_frame",
    "listening_score",
    "mean_foreground_area",
    "build_avs_evaluator",
    "PER_VIDEO_JSON",
    "PNG_DIR",
    "FSCORE_BETA2",
    "FSCORE_NUM_THRESHOLDS",
    "IOU_EPS",
    "binarize",
    "fscore_curve_from_counts",
    "fscore_curves_per_frame",
    "fscore_per_video",
    "fscore_thresholds",
    "mask_iou_per_frame",
    "miou_per_video",
    "threshold_counts",
]
