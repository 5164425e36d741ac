"""aqformer_d2/inference/clip_module.py: the tensor-only clip path equals AQFormer.forward."""
import pytest
import torch
from detectron2.modeling import build_model

from aqformer_d2.inference.clip_module import ClipSegmentationModule, padded_size

from ..modeling.meta_arch.helpers import TINY_CONFIG, make_cfg


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_model(make_cfg(TINY_CONFIG)).eval()


def test_padded_size():
    assert padded_size(64, 64, 32) == (64, 64)
    assert padded_size(72, 65, 32) == (96, 96)
    assert padded_size(72, 65, 0) == (72, 65)


@pytest.mark.parametrize("size", [64, 72])  # 72: not a multiple of 32, the module pads like ImageList
def test_module_equals_model_forward(tiny_model, size):
    """Same pieces, same tensors, same order (normalise, pad with zeros, backbone, pixel and transformer
    decoder, upsample, crop, sigmoid): the results are bitwise equal, not merely close."""
    g = torch.Generator().manual_seed(size)
    frames = torch.randint(0, 256, (5, 3, size, size), generator=g, dtype=torch.uint8)
    audio = torch.randn(5, 1, 96, 64, generator=g)
    module = ClipSegmentationModule(tiny_model, 5, size, size)
    with torch.no_grad():
        ours = module(frames, audio)  # [T, H, W]
        ref = tiny_model([{"images": frames, "audio": audio}])[0]["sound_probs"]  # [T, H, W]
    assert tuple(ours.shape) == (5, size, size)
    assert torch.equal(ours, ref)
    # the frames matter (a module that ignored them would pass the equality above only by accident)
    with torch.no_grad():
        other = module(255 - frames, audio)
    assert (other - ours).abs().max() > 1e-3


def test_module_is_put_in_eval_and_checks_shapes(tiny_model):
    tiny_model.train()
    module = ClipSegmentationModule(tiny_model, 5, 64, 64)
    assert not module.training and not tiny_model.training
    with pytest.raises(ValueError, match=r"frames must be uint8 \[5, 3, 64, 64\], got torch.uint8 \[4, 3, 64, 64\]"):
        module(torch.zeros(4, 3, 64, 64, dtype=torch.uint8), torch.zeros(5, 1, 96, 64))
    with pytest.raises(ValueError, match=r"frames must be uint8 \[5, 3, 64, 64\], got torch.float32"):
        module(torch.zeros(5, 3, 64, 64), torch.zeros(5, 1, 96, 64))
    with pytest.raises(ValueError, match=r"audio must be \[5, 1, 96, 64\], got \[5, 96, 64\]"):
        module(torch.zeros(5, 3, 64, 64, dtype=torch.uint8), torch.zeros(5, 96, 64))
    with pytest.raises(ValueError, match="T = 3, but the model was built for MODEL.AQFORMER.NUM_FRAMES = 5"):
        ClipSegmentationModule(tiny_model, 3, 64, 64)
