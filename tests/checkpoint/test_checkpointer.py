"""AQCheckpointer: safe .pkl / .pth / .safetensors loading, Caffe2 model-zoo names, errors naming the file."""
import fractions
import os
import pickle

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone.resnet import build_resnet_backbone
from safetensors.torch import save_file
from torch import nn

import aqformer_d2
from aqformer_d2.checkpoint import AQCheckpointer, CheckpointFormatError
from aqformer_d2.utils.safe_pickle import UnsafePickleError


class _Model(nn.Module):
    """Stands in for a meta-architecture: the backbone sits under ``backbone.``."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone


def _small_resnet() -> _Model:
    cfg = get_cfg()
    aqformer_d2.add_aqformer_config(cfg)
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3"]  # res4/res5 are not built: small and fast
    return _Model(build_resnet_backbone(cfg, ShapeSpec(channels=3)))


@pytest.fixture
def model():
    return _small_resnet()


def _random_state(model: nn.Module, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in model.state_dict().items():
        if key.endswith("running_var"):
            out[key] = torch.rand(value.shape, generator=gen) + 0.5
        else:
            out[key] = torch.randn(value.shape, generator=gen)
    return out


_C2_BN = {"weight": "s", "bias": "b", "running_mean": "rm", "running_var": "riv"}


def _caffe2_name(d2_key: str) -> str:
    """detectron2 ResNet key (without 'backbone.') -> Detectron/Caffe2 blob name, as in R-50.pkl."""
    parts = d2_key.split(".")
    if parts[0] == "stem":
        return "conv1_w" if parts[-1] == "weight" and parts[-2] == "conv1" else f"res_conv1_bn_{_C2_BN[parts[-1]]}"
    stage, block, layer = parts[0], parts[1], parts[2]
    branch = "branch1" if layer == "shortcut" else "branch2" + "abc"[int(layer[-1]) - 1]
    if parts[3] == "norm":
        return f"{stage}_{block}_{branch}_bn_{_C2_BN[parts[4]]}"
    return f"{stage}_{block}_{branch}_w"


def _assert_loaded(model: _Model, expected):
    for key, value in model.state_dict().items():
        assert torch.equal(value, expected[key]), key


@pytest.mark.parametrize("layout", ["model", "flat", "blobs"])
def test_caffe2_named_pkl_loads_through_restricted_unpickler(tmp_path, model, layout):
    expected = _random_state(model)
    blobs = {_caffe2_name(k[len("backbone."):]): v.numpy() for k, v in expected.items()}
    assert len(blobs) == len(expected)
    blobs["fc1000_w"] = np.zeros((1000, 512), np.float32)
    blobs["conv1_w_momentum"] = np.zeros((64, 3, 7, 7), np.float32)
    data = {"model": blobs} if layout == "model" else {"blobs": blobs} if layout == "blobs" else blobs
    path = tmp_path / "R-18.pkl"
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=2)
    AQCheckpointer(model).load(str(path))
    _assert_loaded(model, expected)


def test_detectron2_model_zoo_pkl(tmp_path, model):
    expected = _random_state(model, seed=3)
    data = {"model": {k: v.numpy() for k, v in expected.items()}, "__author__": "Detectron2 Model Zoo"}
    path = tmp_path / "model_final.pkl"
    with open(path, "wb") as f:
        pickle.dump(data, f)
    AQCheckpointer(model).load(str(path))
    _assert_loaded(model, expected)


class _RunsCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pkl_is_refused(tmp_path, model):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {"x": _RunsCommand(marker)}, "__author__": "x"}, f)
    with pytest.raises(UnsafePickleError, match="evil.pkl.*system"):
        AQCheckpointer(model).load(str(path))
    assert not marker.exists()


def test_trust_pickle_allows_other_objects(tmp_path, model):
    expected = _random_state(model, seed=4)
    path = tmp_path / "mine.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": expected, "__author__": "me", "note": fractions.Fraction(1, 3)}, f)
    with pytest.raises(UnsafePickleError, match="fractions.Fraction"):
        AQCheckpointer(model).load(str(path))
    extra = AQCheckpointer(model, trust_pickle=True).load(str(path))
    _assert_loaded(model, expected)
    assert extra["note"] == fractions.Fraction(1, 3)


def test_pth_with_objects_needs_trust(tmp_path, model):
    expected = _random_state(model, seed=5)
    path = tmp_path / "objects.pth"
    torch.save({"model": expected, "note": fractions.Fraction(2, 3)}, path)
    with pytest.raises(CheckpointFormatError, match="objects.pth.*weights_only"):
        AQCheckpointer(model).load(str(path))
    AQCheckpointer(model, trust_pickle=True).load(str(path))
    _assert_loaded(model, expected)


def test_safetensors(tmp_path, model):
    expected = _random_state(model, seed=6)
    path = tmp_path / "weights.safetensors"
    save_file(expected, str(path))
    AQCheckpointer(model).load(str(path))
    _assert_loaded(model, expected)
    (tmp_path / "broken.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointFormatError, match="broken.safetensors"):
        AQCheckpointer(model).load(str(tmp_path / "broken.safetensors"))


def test_save_and_resume_round_trip(tmp_path, model):
    expected = _random_state(model, seed=7)
    model.load_state_dict(expected)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    AQCheckpointer(model, str(tmp_path), optimizer=optimizer).save("model_0000009", iteration=9)
    fresh = _small_resnet()
    fresh_opt = torch.optim.SGD(fresh.parameters(), lr=0.5, momentum=0.9)
    extra = AQCheckpointer(fresh, str(tmp_path), optimizer=fresh_opt).resume_or_load("", resume=True)
    assert extra["iteration"] == 9
    assert fresh_opt.param_groups[0]["lr"] == 0.1
    _assert_loaded(fresh, expected)


def test_missing_file_is_named(model, tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        AQCheckpointer(model).load(str(tmp_path / "absent.pth"))


def test_corrupt_pth_is_named(tmp_path, model):
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointFormatError, match="garbage.pth.*corrupt"):
        AQCheckpointer(model).load(str(path))
