"""Loading weights from local files: safe readers, a reporting loader, converters, ``AQCheckpointer``.

Import direction: this package imports torch, numpy, safetensors, detectron2.checkpoint, timm and
``aqformer_d2.utils``; it never imports ``aqformer_d2.modeling`` (modeling imports it).
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
from .torchvision_resnet import (
    convert_torchvision_resnet_state_dict,
    load_torchvision_resnet,
    torchvision_resnet_to_detectron2_checkpoint,
)

__all__ = [
    "AQCheckpointer",
    "CheckpointFormatError",
    "LoadReport",
    "StateDictLoadError",
    "TimmNameMap",
    "compare_state_dict",
    "convert_timm_state_dict",
    "convert_torchvision_resnet_state_dict",
    "create_timm_classification_model",
    "create_timm_models",
    "extract_state_dict",
    "load_checkpoint_file",
    "load_state_dict_file",
    "load_state_dict_with_report",
    "load_torchvision_resnet",
    "pickle_checkpoint_to_detectron2",
    "timm_detectron2_checkpoint",
    "timm_feature_name_map",
    "to_tensor_state_dict",
    "torchvision_resnet_to_detectron2_checkpoint",
]
