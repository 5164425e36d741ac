"""MODEL.AQFORMER.MEMORY_FORMAT (aqformer_d2/modeling/meta_arch/aqformer.py): the NHWC layout on the CPU
changes speed, not results beyond float32 round-off."""
import pytest
import torch
from detectron2.modeling import build_model

from aqformer_d2.modeling.meta_arch.aqformer import resolve_memory_format
from tests.modeling.meta_arch.helpers import TINY_CONFIG, make_cfg, make_clip


def test_auto_is_channels_last_on_cpu_only():
    cfg = make_cfg(TINY_CONFIG)
    assert cfg.MODEL.AQFORMER.MEMORY_FORMAT == "auto"
    assert resolve_memory_format(cfg) == "channels_last"
    cfg.MODEL.DEVICE = "cuda"
    assert resolve_memory_format(cfg) == "contiguous"
    cfg.MODEL.AQFORMER.MEMORY_FORMAT = "channels_last"
    assert resolve_memory_format(cfg) == "channels_last"
    cfg.MODEL.AQFORMER.MEMORY_FORMAT = "nhwc"
    with pytest.raises(ValueError, match="MODEL.AQFORMER.MEMORY_FORMAT must be 'auto' or one of"):
        resolve_memory_format(cfg)


def _conv_weights(model):
    return [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]


def test_weights_and_frames_take_the_layout_and_keep_it_after_loading():
    torch.manual_seed(0)
    model = build_model(make_cfg(TINY_CONFIG))
    weights = [w for w in _conv_weights(model) if w.shape[-1] > 1 or w.shape[1] > 1]
    assert weights and all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)
    assert not any(w.is_contiguous() for w in weights if w.shape[-1] > 1 and w.shape[1] > 1)
    plain = build_model(make_cfg(TINY_CONFIG, ["MODEL.AQFORMER.MEMORY_FORMAT", "contiguous"]))
    assert all(w.is_contiguous() for w in _conv_weights(plain))
    model.load_state_dict(plain.state_dict())  # copies into the existing NHWC tensors
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)
    clip = make_clip(torch.Generator().manual_seed(1), frames=5, height=64, width=64, with_masks=False)
    images = model.preprocess_images([clip]).tensor  # [5, 3, 64, 64]
    assert images.is_contiguous(memory_format=torch.channels_last)


def test_outputs_and_losses_agree_across_layouts():
    """Tiny model, random init, float32: probabilities (eval) to 1e-5 and every loss (train) to 1e-5
    relative. The layouts run the same arithmetic with the additions of each convolution and reduction
    in another order: a few float32 ulps (6e-8 relative) per op, not amplified by more than a small
    factor by the normalised layers that follow, and d prob / d logit <= 1/4. Measured on an AVX-512 machine:
    probabilities 6e-7, losses 1e-6 relative (1 and 2 threads). A wrong layout (e.g. a reshape that mixes
    channels and pixels) changes the output at O(1)."""
    torch.manual_seed(0)
    nhwc = build_model(make_cfg(TINY_CONFIG, ["MODEL.AQFORMER.MEMORY_FORMAT", "channels_last"]))
    nchw = build_model(make_cfg(TINY_CONFIG, ["MODEL.AQFORMER.MEMORY_FORMAT", "contiguous"]))
    nchw.load_state_dict(nhwc.state_dict())
    clip = make_clip(torch.Generator().manual_seed(2), frames=5, height=96, width=96)
    with torch.no_grad():
        a = nhwc.eval()([clip])[0]["sound_probs"]
        b = nchw.eval()([clip])[0]["sound_probs"]
    assert (a - b).abs().max().item() <= 1e-5
    torch.manual_seed(3)
    la = nhwc.train()([clip])
    torch.manual_seed(3)
    lb = nchw.train()([clip])
    assert la.keys() == lb.keys()
    for k in la:
        assert abs(la[k].item() - lb[k].item()) <= 1e-5 * max(1.0, abs(lb[k].item())), k
