"""Pretrained weights by name: ``torchvision://``, ``torchvggish://``, ``timm://``, ``detectron2://`` and
``mask2former://`` URLs, registered with detectron2's ``PathManager`` (iopath) on ``import aqformer_d2``.
README.md ("Pretrained weights by name") lists the files they name and how each is checked.

A file is downloaded once into the verified cache of :mod:`.weight_cache`. Each URL has two local forms:

* ``"checkpoint"`` (what ``PathManager.get_local_path(url)`` returns, hence what ``MODEL.WEIGHTS`` gets): a
  whole-model detectron2 checkpoint. torchvision, timm and torchvggish files are converted on first use by
  the package's converters (pure functions of the state dict); detectron2 and Mask2Former model-zoo models
  (COCO detectors / segmenters) are reduced to their ResNet backbone. The result is cached next to the
  download (``<name>.d2.pth``, with a ``.json`` record of the source hash and converter).
  ``detectron2://ImageNetPretrained/...`` files already are backbones and are used as they are.
* ``"original"`` (``get_local_path(url, form="original")``, for ``MODEL.AUDIO_ENCODER.WEIGHTS`` /
  ``PCA_WEIGHTS``, ``MODEL.TIMM_BACKBONE.WEIGHTS`` and the converter tools): the downloaded file itself.

Each scheme's base URL can be replaced (a mirror, a test server) by ``AQFORMER_<SCHEME>_BASE_URL``, e.g.
``AQFORMER_TORCHVISION_BASE_URL``; the file's path below the base stays the same.
"""
from __future__ import annotations

import json
import logging
import os
import posixpath
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch
from detectron2.utils.file_io import PathHandler, PathManager
from iopath.common.file_io import file_lock

from .checkpointer import atomic_write, save_weights_checkpoint
from .coco_backbone import coco_backbone_model_state
from .loading import load_state_dict_file
from .timm_convert import timm_model_state
from .torchvggish_convert import torchvggish_model_state
from .torchvision_resnet import convert_torchvision_resnet_state_dict
from .weight_cache import fetch_verified, hash_prefix_from_name, sha256_of_file, weights_cache_dir

__all__ = [
    "CHECKPOINT_FORM", "ORIGINAL_FORM", "SCHEMES", "TORCHVGGISH_FILES", "TORCHVISION_FILES", "WeightSource",
    "WeightURLHandler", "fetch_weights", "is_weight_url", "local_weight_file", "resolve_weight_url"
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORM = "checkpoint"
ORIGINAL_FORM = "original"
_FORMS = (CHECKPOINT_FORM, ORIGINAL_FORM)

# Scheme -> default base URL. The environment variable AQFORMER_<SCHEME>_BASE_URL replaces it.
SCHEMES: Dict[str, str] = {
    # torchvision 0.29.1, torchvision/models/resnet.py: every ImageNet ResNet URL starts with this.
    "torchvision": "https://download.pytorch.org/models",
    # harritaylor/torchvggish, hubconf.py: model_urls, the files of TORCHVGGISH_FILES below this release.
    "torchvggish": "https://github.com/harritaylor/torchvggish/releases/download/v0.1",
    # huggingface_hub (installed with timm 1.0.31), constants.py: HUGGINGFACE_CO_URL_TEMPLATE =
    # "https://huggingface.co/{repo_id}/resolve/{revision}/{filename}".
    "timm": "https://huggingface.co",
    # detectron2 v0.6, detectron2/utils/file_io.py: Detectron2Handler.S3_DETECTRON2_PREFIX.
    "detectron2": "https://dl.fbaipublicfiles.com/detectron2",
    # facebookresearch/Mask2Former, MODEL_ZOO.md: every model link starts with this prefix.
    "mask2former": "https://dl.fbaipublicfiles.com/maskformer/mask2former",
}

# detectron2:// files below this folder are ImageNet backbones (Caffe2 / torchvision names, loaded with
# detectron2's matching heuristics); every other model-zoo file is a whole detector or segmenter.
DETECTRON2_BACKBONE_FOLDER = "ImageNetPretrained/"

# torchvision://<name> -> released file name. From torchvision 0.29.1 (torchvision/models/resnet.py):
# ResNet50_Weights.IMAGENET1K_V1.url == "https://download.pytorch.org/models/resnet50-0676ba61.pth".
# AVSBench (avs_scripts/avs_s4/config.py) used "resnet50-19c8e357.pth", the same IMAGENET1K_V1 weights
# in torch's legacy serialisation; torchvision re-saved them under the new name (pytorch/vision#2068).
TORCHVISION_FILES: Dict[str, str] = {"resnet50": "resnet50-0676ba61.pth"}

# torchvggish://<name> -> released file name (harritaylor/torchvggish hubconf.py, release v0.1).
TORCHVGGISH_FILES: Dict[str, str] = {"vggish": "vggish-10086976.pth", "vggish_pca": "vggish_pca_params-970ea276.pth"}
# The PCA parameters have no whole-model form: they only go to this option.
_TORCHVGGISH_WITHOUT_CHECKPOINT_FORM = {"vggish_pca": "MODEL.AUDIO_ENCODER.PCA_WEIGHTS"}

# timm's hub loader (timm/models/_hub.py, load_state_dict_from_hf) tries HF_SAFE_WEIGHTS_NAME first.
TIMM_HF_FILENAME = "model.safetensors"
TIMM_HF_REVISION = "main"

# Suffix of a converted (whole-model) file, written next to the downloaded one.
CONVERTED_SUFFIX = ".d2.pth"


@dataclass(frozen=True)
class Converter:
    """How a downloaded file becomes a whole-model checkpoint.

    Attributes:
        name: identifies the conversion (recorded with the converted file; another name re-converts).
        author: the checkpoint's ``__author__``.
        convert: ``(state dict, file name) -> state dict of the whole model`` (a pure function).
        command: the manual equivalent, with ``{input}`` / ``{output}`` placeholders.
    """

    name: str
    author: str
    convert: Callable[[Dict[str, torch.Tensor], str], Mapping[str, torch.Tensor]]
    command: str


_TORCHVISION_RESNET = Converter(
    "convert_torchvision_resnet_state_dict(prefix='backbone.')", "torchvision",
    lambda sd, source: convert_torchvision_resnet_state_dict(sd, prefix="backbone.", source=source)[0],
    "python tools/convert_torchvision_resnet.py {input} {output}",
)
_TORCHVGGISH = Converter(
    "torchvggish_model_state(prefix='audio_encoder.')", "torchvggish",
    lambda sd, source: torchvggish_model_state(sd, prefix="audio_encoder.", source=source),
    "python tools/convert_vggish.py {input} -o {output}",
)
_COCO_BACKBONE = Converter(
    "coco_backbone_model_state(prefix='backbone.')", "coco_backbone",
    lambda sd, source: coco_backbone_model_state(sd, prefix="backbone.", source=source),
    "python tools/convert_d2_coco_backbone.py {input} {output}",
)


def _timm_converter(model_name: str) -> Converter:
    return Converter(
        f"timm_model_state({model_name!r}, prefix='backbone.body.')", f"timm:{model_name}",
        lambda sd, source: timm_model_state(sd, model_name, prefix="backbone.body.", source=source),
        f"python tools/convert_timm_backbone.py {{input}} {{output}} --model {model_name}",
    )


@dataclass(frozen=True)
class WeightSource:
    """One weight file reachable by URL.

    Attributes:
        url: the name the user gave (``torchvision://resnet50``).
        download_url: where the file is downloaded from.
        cache_path: where it is kept.
        hash_prefix: SHA-256 prefix from the released file name, or None (hash recorded at first download).
        converter: how to make the whole-model form; None when the file already is one (``detectron2://``).
        checkpoint_form_note: set when there is no whole-model form: says which option takes the file.
    """

    url: str
    download_url: str
    cache_path: str
    hash_prefix: Optional[str]
    converter: Optional[Converter]
    checkpoint_form_note: str = ""

    @property
    def converted_path(self) -> str:
        """Where the converted whole-model checkpoint is cached."""
        return os.path.splitext(self.cache_path)[0] + CONVERTED_SUFFIX


def _source(url: str, scheme: str, relpath: str, converter: Optional[Converter], *, hashed_name: bool = False,
            cache_relpath: str = "", checkpoint_form_note: str = "") -> WeightSource:
    """``relpath`` below the scheme's base URL, cached as ``<cache>/<scheme>/<cache_relpath or relpath>``.
    ``hashed_name``: the file name carries a SHA-256 prefix (torch hub's convention), which is checked; other
    files get their hash recorded at first download."""
    base = (os.environ.get(f"AQFORMER_{scheme.upper()}_BASE_URL") or SCHEMES[scheme]).rstrip("/")
    cache_path = os.path.join(weights_cache_dir(), scheme, *(cache_relpath or relpath).split("/"))
    hash_prefix = hash_prefix_from_name(relpath) if hashed_name else None
    return WeightSource(url, f"{base}/{relpath}", cache_path, hash_prefix, converter, checkpoint_form_note)


def _from_table(url: str, scheme: str, name: str, table: Mapping[str, str]) -> str:
    if name not in table:
        raise ValueError(f"{url}: unknown {scheme} weights {name!r}; known: {sorted(table)}")
    return table[name]


def _resolve_torchvision(url: str, name: str) -> WeightSource:
    filename = _from_table(url, "torchvision", name, TORCHVISION_FILES)
    return _source(url, "torchvision", filename, _TORCHVISION_RESNET, hashed_name=True)


def _resolve_torchvggish(url: str, name: str) -> WeightSource:
    filename = _from_table(url, "torchvggish", name, TORCHVGGISH_FILES)
    option = _TORCHVGGISH_WITHOUT_CHECKPOINT_FORM.get(name)
    note = f"{url} has no whole-model checkpoint form; pass it as {option}" if option else ""
    return _source(url, "torchvggish", filename, None if option else _TORCHVGGISH, hashed_name=True,
                   checkpoint_form_note=note)


def _resolve_timm(url: str, name: str) -> WeightSource:
    """``timm://<model>[.<tag>]``: ``model.safetensors`` of the Hugging Face repo that timm's pretrained config
    names."""
    import timm
    from timm.models import get_pretrained_cfg

    architecture = name.split(".", 1)[0]
    if not timm.is_model(architecture):
        raise ValueError(f"{url}: timm {timm.__version__} has no model named {architecture!r}")
    cfg = get_pretrained_cfg(name)
    if cfg is None:
        raise ValueError(f"{url}: timm {timm.__version__} has no pretrained config named {name!r}")
    if not cfg.hf_hub_id:
        raise ValueError(
            f"{url}: timm's pretrained config for {name!r} names no Hugging Face hub id (url={cfg.url!r}); "
            "download the weights yourself and pass the local file"
        )
    filename = cfg.hf_hub_filename or TIMM_HF_FILENAME
    return _source(url, "timm", f"{cfg.hf_hub_id}/resolve/{TIMM_HF_REVISION}/{filename}",
                   _timm_converter(cfg.architecture or architecture), cache_relpath=f"{cfg.hf_hub_id}/{filename}")


def _resolve_model_zoo(url: str, name: str) -> WeightSource:
    """``detectron2://`` / ``mask2former://<path below the model zoo>``: a COCO model, reduced to its backbone
    (detectron2's ``ImageNetPretrained/`` files already are backbones)."""
    scheme = url.partition("://")[0]
    relpath = posixpath.normpath(name)
    if relpath.startswith(("/", "..")) or relpath == ".":
        raise ValueError(f"{url}: the path after '{scheme}://' must stay below the {scheme} model zoo")
    backbone_only = scheme == "detectron2" and relpath.startswith(DETECTRON2_BACKBONE_FOLDER)
    return _source(url, scheme, relpath, None if backbone_only else _COCO_BACKBONE)


_RESOLVERS: Dict[str, Callable[[str, str], WeightSource]] = {
    "torchvision": _resolve_torchvision,
    "torchvggish": _resolve_torchvggish,
    "timm": _resolve_timm,
    "detectron2": _resolve_model_zoo,
    "mask2former": _resolve_model_zoo,
}


def _split_url(url: Any) -> Tuple[str, str]:
    """``(scheme, name)`` of a weight URL; ``("", "")`` for anything else."""
    scheme, sep, name = url.partition("://") if isinstance(url, str) else ("", "", "")
    return (scheme, name) if sep and scheme in SCHEMES else ("", "")


def is_weight_url(path: Any) -> bool:
    """Whether ``path`` is a string starting with one of :data:`SCHEMES` followed by ``://``."""
    return bool(_split_url(path)[0])


def resolve_weight_url(url: str) -> WeightSource:
    """Where a weight URL is downloaded from and cached (no network access).

    Raises:
        ValueError: unknown scheme or name (the message lists the known ones).
    """
    scheme, name = _split_url(url)
    if not scheme:
        raise ValueError(f"{url}: not a weight URL (schemes: {', '.join(s + '://' for s in SCHEMES)})")
    if not name:
        raise ValueError(f"{url}: no name after '{scheme}://'")
    return _RESOLVERS[scheme](url, name)


def _offline_hint(source: WeightSource, form: str) -> str:
    """What to do by hand when ``source`` cannot be downloaded."""
    check = (
        f"it is checked against the SHA-256 prefix {source.hash_prefix} in its name"
        if source.hash_prefix
        else "its SHA-256 is recorded on first use"
    )
    hint = (
        f"On a machine without internet access: download {source.download_url} elsewhere and copy it to "
        f"{source.cache_path} ({check}), then run again"
    )
    if form == CHECKPOINT_FORM and source.converter is not None:
        command = source.converter.command.format(
            input=os.path.basename(source.cache_path), output=os.path.basename(source.converted_path)
        )
        return (
            f"{hint} (it is converted on first use); or convert the downloaded file yourself with "
            f"`{command}` and pass the output file as MODEL.WEIGHTS."
        )
    return f"{hint}; or pass the downloaded file's local path instead of {source.url}."


def _converted_file_is_current(source: WeightSource, source_sha256: str) -> bool:
    """The cached converted file exists, came from this download with this converter, and is intact."""
    path, record_path = source.converted_path, source.converted_path + ".json"
    if not (os.path.isfile(path) and os.path.isfile(record_path)):
        return False
    try:
        with open(record_path, "r", encoding="utf-8") as f:
            record = json.load(f)
    except json.JSONDecodeError:
        record = None
    if not isinstance(record, dict):
        logger.warning("%s: unreadable conversion record; converting again", record_path)
        return False
    if record.get("source_sha256") != source_sha256 or record.get("converter") != source.converter.name:
        logger.info("%s: made from another file or by another converter; converting again", path)
        return False
    if record.get("sha256") != sha256_of_file(path):
        logger.warning("%s: does not match its conversion record (corrupt); converting again", path)
        return False
    return True


def _convert_cached(source: WeightSource) -> str:
    """Convert the (verified) cached download into a whole-model checkpoint next to it; returns its path."""
    path, converter = source.converted_path, source.converter
    with file_lock(path):
        source_sha256 = sha256_of_file(source.cache_path)
        if _converted_file_is_current(source, source_sha256):
            logger.info("%s: using cached conversion %s", source.url, path)
            return path
        logger.info("%s: converting %s with %s", source.url, source.cache_path, converter.name)
        model_state = converter.convert(load_state_dict_file(source.cache_path), source.cache_path)
        # the record is written last: a conversion cut off before it is redone on the next use
        save_weights_checkpoint(path, model_state, converter.author)
        record = {"source": os.path.basename(source.cache_path), "source_sha256": source_sha256,
                  "converter": converter.name, "sha256": sha256_of_file(path)}
        atomic_write(path + ".json", lambda f: f.write((json.dumps(record, indent=1) + "\n").encode("utf-8")))
        logger.info("%s: wrote %s (%d tensors)", source.url, path, len(model_state))
        return path


def fetch_weights(url: str, *, form: str = CHECKPOINT_FORM, force: bool = False) -> str:
    """Local path of a weight URL: download (once, verified) and, for ``form="checkpoint"``, convert.

    Args:
        url: a URL of one of :data:`SCHEMES`.
        form: ``"checkpoint"`` (whole-model detectron2 checkpoint, for ``MODEL.WEIGHTS``) or
            ``"original"`` (the released file, for component options and the converter tools).
        force: download again even if cached.

    Raises:
        ValueError: unknown scheme / name / form, or no whole-model form exists for ``url``.
        aqformer_d2.checkpoint.WeightDownloadError: cannot download (the message names the URL, the cache
            path and the manual route).
        aqformer_d2.checkpoint.WeightHashError: the file does not match its hash.
    """
    if form not in _FORMS:
        raise ValueError(f"{url}: form must be one of {_FORMS}, got {form!r}")
    source = resolve_weight_url(url)
    if form == CHECKPOINT_FORM and source.checkpoint_form_note:
        raise ValueError(source.checkpoint_form_note)
    fetch_verified(source.download_url, source.cache_path, hash_prefix=source.hash_prefix, what=url,
                   hint=_offline_hint(source, form), force=force)
    if form == ORIGINAL_FORM or source.converter is None:
        return source.cache_path
    return _convert_cached(source)


def local_weight_file(path: str, *, form: str = ORIGINAL_FORM) -> str:
    """A local file for a weight option: URLs of :data:`SCHEMES` are fetched, anything else is returned as is.

    Component options (``MODEL.AUDIO_ENCODER.WEIGHTS``, ``MODEL.TIMM_BACKBONE.WEIGHTS``, converter inputs)
    use the default ``form="original"``: the released file.
    """
    path = os.fspath(path)
    return fetch_weights(path, form=form) if is_weight_url(path) else path


class WeightURLHandler(PathHandler):
    """iopath handler for :data:`SCHEMES` URLs (``get_local_path(url, form="checkpoint"|"original")``)."""

    def _get_supported_prefixes(self) -> List[str]:
        return [f"{scheme}://" for scheme in SCHEMES]

    def _get_local_path(self, path: str, force: bool = False, form: str = CHECKPOINT_FORM, **kwargs: Any) -> str:
        self._check_kwargs(kwargs)
        return fetch_weights(path, form=form, force=force)

    def _open(self, path: str, mode: str = "rb", buffering: int = -1, **kwargs: Any):
        if mode not in ("r", "rb"):
            raise ValueError(f"{path}: weight URLs are read-only (mode {mode!r})")
        if buffering != -1:
            raise ValueError(f"{path}: the 'buffering' argument is not supported for weight URLs")
        return open(self._get_local_path(path, **kwargs), mode)


# Replaces the handler detectron2 registers for ``detectron2://``, so that those files get the same verified cache.
PathManager.register_handler(WeightURLHandler(), allow_override=True)
