"""Visual backbones. Importing this package registers ``AQTimmBackbone`` in detectron2's BACKBONE_REGISTRY.

ResNet-50 is detectron2's own ``build_resnet_backbone``; load torchvision weights into it with
``aqformer_d2.checkpoint.load_torchvision_resnet`` or convert them with tools/convert_torchvision_resnet.py.
"""
from .build import build_aq_backbone
from .timm_backbone import AQTimmBackbone, freeze_timm_feature_levels

__all__ = ["AQTimmBackbone", "build_aq_backbone", "freeze_timm_feature_levels"]
