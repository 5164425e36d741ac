"""Loading weights: safe readers, a reporting loader, converters, ``AQCheckpointer``, weight URLs.

Importing it registers the ``torchvision://``, ``torchvggish://``, ``timm://``, ``detectron2://`` and
``mask2former://`` weight URLs with detectron2's ``PathManager`` (:mod:`.url_schemes`; downloads cached by
:mod:`.weight_cache`). Converters are pure functions: a released state dict in, the whole model's names out.

Import direction: this package imports torch, numpy, safetensors, detectron2.checkpoint, timm, iopath and
``aqformer_d2.utils``; it never imports ``aqformer_d2.modeling`` (modeling imports it).
Inside it: loading / state_dict_report <- converters (torchvision_resnet, torchvggish_convert, timm_convert,
coco_backbone) and checkpointer <- weight_cache <- url_schemes.
"""
from .checkpointer import AQCheckpointer, atomic_write, pickle_checkpoint_to_detectron2, save_weights_checkpoint
from .coco_backbone import coco_backbone_model_state, load_coco_backbone
from .loading import CheckpointFormatError, extract_state_dict, load_checkpoint_file, load_state_dict_file
from .state_dict_report import (
    LoadReport, StateDictLoadError, compare_state_dict, load_state_dict_with_report, to_tensor_state_dict,
)
from .timm_convert import (
    TimmNameMap, convert_timm_state_dict, create_timm_classification_model, create_timm_models,
    timm_feature_name_map, timm_model_state,
)
from .torchvggish_convert import torchvggish_model_state, vggish_pca_tensors
from .torchvision_resnet import convert_torchvision_resnet_state_dict, load_torchvision_resnet
from .url_schemes import WeightURLHandler, fetch_weights, is_weight_url, local_weight_file, resolve_weight_url
from .weight_cache import WeightDownloadError, WeightHashError, weights_cache_dir

__all__ = [
    "AQCheckpointer", "CheckpointFormatError", "LoadReport", "StateDictLoadError", "TimmNameMap",
    "WeightDownloadError", "WeightHashError", "WeightURLHandler", "atomic_write", "coco_backbone_model_state",
    "compare_state_dict", "convert_timm_state_dict", "convert_torchvision_resnet_state_dict",
    "create_timm_classification_model", "create_timm_models", "extract_state_dict", "fetch_weights",
    "is_weight_url", "load_checkpoint_file", "load_coco_backbone", "load_state_dict_file",
    "load_state_dict_with_report", "load_torchvision_resnet", "local_weight_file",
    "pickle_checkpoint_to_detectron2", "resolve_weight_url", "save_weights_checkpoint", "timm_feature_name_map",
    "timm_model_state", "to_tensor_state_dict", "torchvggish_model_state", "vggish_pca_tensors", "weights_cache_dir"
]
