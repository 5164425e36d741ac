"""torchvggish -> AQFormer checkpoint conversion (function and tools/convert_vggish.py)."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from torch import nn

from aqformer_d2.modeling.audio_encoder import VGGish, VGGishPCA, convert_torchvggish_state_dict

from .test_vggish import TINY, TINY_SHAPES, tiny_state_dict

TOOL = Path(__file__).resolve().parents[3] / "tools" / "convert_vggish.py"


def _load_tool():
    spec = importlib.util.spec_from_file_location("convert_vggish_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Model(nn.Module):
    """Stand-in for the full model: the audio encoder sits at ``audio_encoder``."""

    def __init__(self, pca: bool):
        super().__init__()
        self.audio_encoder = VGGish(**TINY)
        if pca:
            self.audio_encoder.pproc = VGGishPCA(TINY["out_dim"])
        self.head = nn.Linear(2, 2)


def test_convert_prefixes_keys_and_keeps_values():
    sd = tiny_state_dict(seed=4)
    out = convert_torchvggish_state_dict(sd)
    assert list(out) == ["audio_encoder." + k for k in TINY_SHAPES]
    for k, v in sd.items():
        assert torch.equal(out["audio_encoder." + k], v)
        assert out["audio_encoder." + k].data_ptr() != v.data_ptr()

    pca = {"pca_eigen_vectors": np.eye(8), "pca_means": np.arange(8.0)}
    out = convert_torchvggish_state_dict(sd, pca_params=pca, prefix="m.audio.")
    assert len(out) == len(TINY_SHAPES) + 2
    assert out["m.audio.pproc.pca_matrix"].shape == (8, 8) and out["m.audio.pproc.pca_matrix"].dtype == torch.float32
    assert torch.equal(out["m.audio.pproc.pca_means"], torch.arange(8.0).reshape(8, 1))


@pytest.mark.parametrize(
    "edit, pattern",
    [
        (lambda sd: sd.pop("features.0.bias"), r"missing keys \['features.0.bias'\]"),
        (lambda sd: sd.__setitem__("embeddings.6.bias", torch.zeros(3)), r"unexpected keys \['embeddings.6.bias'\]"),
        (lambda sd: sd.__setitem__("features.8.weight", torch.zeros(4, 2, 3, 3)), r"features.8.weight: \[4, 2, 3, 3\]"),
        (lambda sd: sd.pop("features.13.weight"), r"not a torchvggish"),
    ],
)
def test_convert_is_strict(edit, pattern):
    sd = tiny_state_dict()
    edit(sd)
    with pytest.raises(ValueError, match=pattern):
        convert_torchvggish_state_dict(sd, source="my_vggish.pth")


def test_convert_rejects_bad_pca():
    with pytest.raises(ValueError, match="embedding width 8"):
        convert_torchvggish_state_dict(
            tiny_state_dict(), pca_params={"pca_eigen_vectors": torch.eye(4), "pca_means": torch.zeros(4)}
        )


def test_tool_writes_checkpoint_loadable_by_detectron2(tmp_path):
    sd = tiny_state_dict(seed=5)
    torch.save(sd, tmp_path / "vggish.pth")
    rng = np.random.default_rng(1)
    pca = {"pca_eigen_vectors": rng.standard_normal((8, 8)), "pca_means": rng.standard_normal(8)}
    torch.save(pca, tmp_path / "pca.pth")
    out_path = tmp_path / "out" / "converted.pth"

    tool = _load_tool()
    rc = tool.main([str(tmp_path / "vggish.pth"), "--pca", str(tmp_path / "pca.pth"), "-o", str(out_path)])
    assert rc == 0
    ckpt = torch.load(out_path, weights_only=True)
    assert set(ckpt) == {"model", "__author__", "matching_heuristics"} and len(ckpt["model"]) == len(TINY_SHAPES) + 2
    assert ckpt["__author__"] == "torchvggish" and ckpt["matching_heuristics"] is False

    model = _Model(pca=True)
    head_before = model.head.weight.detach().clone()
    DetectionCheckpointer(model).load(str(out_path))
    enc = model.audio_encoder.state_dict()
    for k, v in sd.items():
        assert torch.equal(enc[k], v), k
    torch.testing.assert_close(enc["pproc.pca_matrix"], torch.as_tensor(pca["pca_eigen_vectors"], dtype=torch.float32))
    torch.testing.assert_close(enc["pproc.pca_means"][:, 0], torch.as_tensor(pca["pca_means"], dtype=torch.float32))
    assert torch.equal(model.head.weight, head_before)

    bad = tmp_path / "bad.pth"
    sd.pop("embeddings.0.weight")
    torch.save(sd, bad)
    with pytest.raises(ValueError, match=r"bad.pth.*missing keys \['embeddings.0.weight'\]"):
        tool.main([str(bad), "-o", str(tmp_path / "never.pth")])
    assert not (tmp_path / "never.pth").exists()
