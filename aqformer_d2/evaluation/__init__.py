"""AVSBench evaluation: S4 / MS3 (M_J, M_F) and AVSS (official semantic mIoU / F). Never imports
aqformer_d2.modeling."""
from .avs_evaluator import PER_VIDEO_JSON, PNG_DIR, AVSEvaluator, build_avs_evaluator
from .avss_evaluator import AVSS_METRICS_JSON, AVSS_PROTOCOLS, AVSSEvaluator, avss_result_key, build_avss_evaluator
from .avss_metrics import AVSS_FSCORE_BETA2, AVSS_IOU_EPS, argmax_labels, avss_scores, class_areas, class_sums, frame_iou_fscore
from .build import best_metric_name, build_aq_evaluator, register_aq_evaluator
from .listening import (
    ListeningEvaluator,
    bootstrap_interval,
    drop_small_masks,
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
    "AVSS_FSCORE_BETA2",
    "AVSS_IOU_EPS",
    "AVSS_METRICS_JSON",
    "AVSS_PROTOCOLS",
    "AVSSEvaluator",
    "argmax_labels",
    "avss_result_key",
    "avss_scores",
    "best_metric_name",
    "build_aq_evaluator",
    "build_avss_evaluator",
    "class_areas",
    "class_sums",
    "frame_iou_fscore",
    "register_aq_evaluator",
    "AVSEvaluator",
    "ListeningEvaluator",
    "bootstrap_interval",
    "drop_small_masks",
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
