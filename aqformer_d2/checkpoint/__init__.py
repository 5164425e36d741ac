"""Loading weights: safe readers, a reporting loader, converters, ``AQCheckpointer``, weight URLs.

Importing it registers the ``torchvision://``, ``torchvggish://``, ``timm://`` and ``detectron2://`` weight
URLs with detectron2's ``PathManager`` (:mod:`.url_schemes`; downloads cached by :mod:`.weight_cache`).

Import direction: this package imports torch, numpy, safetensors, detectron2.checkpoint, timm, iopath,
``aqformer_d2.utils`` and ``aqformer_d2.audio``; it never imports ``aqformer_d2.modeling`` (modeling imports it).
"""
from .checkpointer import AQCheckpointer, pickle_checkpoint_to_detectron2
from .loading import CheckpointFormatError, extract_state_dict, load_checkpoint_file, load_state_dict_file
from .state_dict_report import (
    LoadReport,
    StateDictLoadError,
    compare_state_dict,
    load_state_dict_with_report,
    to_tensor_state_dict,
)
from .timm_convert import (
    TimmNameMap,
    convert_timm_state_dict,
    create_timm_classification_model,
    create_timm_models,
    timm_detectron2_checkpoint,
    timm_feature_name_map,
)
from .torchvggish_convert import convert_torchvggish_state_dict, torchvggish_to_detectron2_checkpoint
from .torchvision_resnet import (
    convert_torchvision_resnet_state_dict,
    load_torchvision_resnet,
    torchvision_resnet_to_detectron2_checkpoint,
)
from .url_schemes import WeightURLHandler, fetch_weights, is_weight_url, local_weight_file, resolve_weight_url
from .weight_cache import WeightDownloadError, WeightHashError, weights_cache_dir

__all__ = [
    "AQCheckpointer",
    "CheckpointFormatError",
    "LoadReport",
    "StateDictLoadError",
    "TimmNameMap",
    "WeightDownloadError",
    "WeightHashError",
    "WeightURLHandler",
    "compare_state_dict",
    "convert_timm_state_dict",
    "convert_torchvggish_state_dict",
    "convert_torchvision_resnet_state_dict",
    "create_timm_classification_model",
    "create_timm_models",
    "extract_state_dict",
    "fetch_weights",
    "is_weight_url",
    "load_checkpoint_file",
    "load_state_dict_file",
    "load_state_dict_with_report",
    "load_torchvision_resnet",
    "local_weight_file",
    "pickle_checkpoint_to_detectron2",
    "resolve_weight_url",
    "timm_detectron2_checkpoint",
    "timm_feature_name_map",
    "to_tensor_state_dict",
    "torchvggish_to_detectron2_checkpoint",
    "torchvision_resnet_to_detectron2_checkpoint",
    "weights_cache_dir",
]
