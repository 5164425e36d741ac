"""The full-size AQFormer models of the paper's S4 configs, randomly initialised, on the CPU:
ResNet-50 (configs/avsbench/s4/aqformer_R50.yaml) and PVT-v2-b5 (configs/avsbench/s4/aqformer_PVTv2b5.yaml),
one clip of T = 5 frames at 224 x 224.

One model per backbone (module scope): an eval forward (output shape) and one training step (finite
losses, every parameter that should learn gets a gradient). The exceptions are those of helpers.py
(printed eq. (1) f_q/f_k, first-step pixel-decoder level_embed, ABTI f_m.bias, decoder level_embed);
the R50's FrozenBN layers hold buffers, not parameters, so they are not exceptions.
"""
import pytest
import torch
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_model

from .helpers import PVT_CONFIG, R50_CONFIG, check_gradients, gradient_exceptions, make_cfg, make_clip

T, SIZE = 5, 224
CONFIGS = {"R50": R50_CONFIG, "PVTv2b5": PVT_CONFIG}


@pytest.fixture(scope="module", params=list(CONFIGS))
def full_model(request):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    cfg = make_cfg(CONFIGS[request.param])
    torch.manual_seed(0)
    model = build_model(cfg)
    yield request.param, cfg, model
    del model
    torch.set_num_threads(threads)


def _clip(seed=0, **kwargs):
    return make_clip(torch.Generator().manual_seed(seed), T, SIZE, SIZE, **kwargs)


def test_full_size_eval_forward(full_model):
    name, cfg, model = full_model
    assert cfg.MODEL.AQ_PIXEL_DECODER.CONVS_DIM == 256 and cfg.MODEL.AQ_TRANSFORMER_DECODER.DEC_STAGES == 3
    model.eval()
    with torch.no_grad():
        out = model([_clip(with_masks=False)])
    assert len(out) == 1
    probs = out[0]["sound_probs"]
    assert probs.shape == (T, SIZE, SIZE)
    assert torch.isfinite(probs).all() and probs.min() >= 0 and probs.max() <= 1


def test_full_size_training_step(full_model):
    name, cfg, model = full_model
    model.train()
    losses = model([_clip(valid=[True, False, False, False, False])])  # S4: only the first frame is labelled
    assert "loss_sim" in losses and len(losses) == 2 * 9 + 1  # 9 decoder layers x (bce, dice) + sim
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    if name == "R50":
        # FrozenBN: the backbone's norms have no parameters at all; every conv weight trains (FREEZE_AT 0)
        assert cfg.MODEL.RESNETS.NORM == "FrozenBN" and cfg.MODEL.BACKBONE.FREEZE_AT == 0
        assert any(isinstance(m, FrozenBatchNorm2d) for m in model.backbone.modules())
        assert all(not list(m.parameters()) for m in model.backbone.modules() if isinstance(m, FrozenBatchNorm2d))
    # VGGish is frozen in the AVSBench configs (AVSBench's protocol); everything else trains.
    assert cfg.MODEL.AUDIO_ENCODER.FREEZE
    assert not any(p.requires_grad for p in model.audio_encoder.parameters())
    assert all(p.requires_grad for n, p in model.named_parameters() if not n.startswith("audio_encoder."))
    check_gradients(model, gradient_exceptions(model, cfg, first_step=True))
    model.zero_grad(set_to_none=True)
