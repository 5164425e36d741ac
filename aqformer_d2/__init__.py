"""AQFormer (Huang et al., IJCAI 2023) as a detectron2 plugin.

Importing this package registers every component (backbones, audio encoder, pixel decoder,
transformer decoder, meta-architecture, dataset mappers, datasets) in its registry, and the weight
URLs ``torchvision://``, ``torchvggish://``, ``timm://``, ``detectron2://`` with detectron2's
``PathManager`` (:mod:`aqformer_d2.checkpoint.url_schemes`). Last, it loads the installed plugins:
packages with an entry point in the group ``aqformer_d2.plugins`` (:mod:`aqformer_d2.plugins`).
Import it before ``detectron2.engine`` / ``detectron2.layers`` where detectron2 was installed without
its compiled extension (see :mod:`aqformer_d2.compat`).
"""
from . import compat  # noqa: F401  (must precede any detectron2.layers import)
from .config import add_aqformer_config
from . import checkpoint, data, evaluation, modeling  # noqa: F401,E402  (registration)

from .plugins import load_installed_plugins

__all__ = ["add_aqformer_config"]
__version__ = "0.1.0"

load_installed_plugins()  # last: a plugin importing aqformer_d2 finds it complete
