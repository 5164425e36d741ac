"""Optimizer and schedule of aqformer_d2/engine/optimizer.py: parameter groups (backbone multiplier, weight
decay of norms / embeddings, frozen parameters), gradient clipping types and the poly schedule."""
import pytest
import torch
from detectron2.config import get_cfg
from torch import nn

from aqformer_d2.config import add_aqformer_config
from aqformer_d2.engine.optimizer import build_optimizer, build_param_groups, build_poly_lr_scheduler


class _Toy(nn.Module):
    """backbone conv + norm, a head linear + LayerNorm, an embedding, a level_embed parameter, a frozen part."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
        self.head = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
        self.query_feat = nn.Embedding(5, 4)
        self.level_embed = nn.Parameter(torch.zeros(3, 4))
        self.audio_encoder = nn.Linear(2, 2)
        self.audio_encoder.requires_grad_(False)


def _cfg(**solver):
    cfg = get_cfg()
    add_aqformer_config(cfg)
    for key, value in solver.items():
        setattr(cfg.SOLVER, key, value)
    return cfg


def test_param_groups():
    groups = build_param_groups(_Toy(), base_lr=1.0, weight_decay=0.05, weight_decay_norm=0.01,
                                weight_decay_embed=0.02, backbone_multiplier=0.1)
    by_name = {g["name"]: g for g in groups}
    assert not any(name.startswith("audio_encoder.") for name in by_name)  # frozen: left out
    assert by_name["backbone.0.weight"]["lr"] == pytest.approx(0.1)
    assert by_name["backbone.1.weight"]["lr"] == pytest.approx(0.1)
    assert by_name["head.0.weight"]["lr"] == 1.0
    assert [by_name[n]["weight_decay"] for n in ("backbone.1.weight", "backbone.1.bias", "head.1.weight")] == [0.01] * 3
    assert by_name["query_feat.weight"]["weight_decay"] == 0.02
    assert by_name["level_embed"]["weight_decay"] == 0.02
    assert by_name["head.0.weight"]["weight_decay"] == by_name["head.0.bias"]["weight_decay"] == 0.05


def _two_params():
    model = nn.Module()
    model.a = nn.Parameter(torch.zeros(2))
    model.b = nn.Parameter(torch.zeros(2))
    model.a.grad = torch.tensor([3.0, 0.0])
    model.b.grad = torch.tensor([0.0, 4.0])  # joint L2 norm 5, per-parameter norms 3 and 4
    return model


@pytest.mark.parametrize(
    "clip_type, expected_a, expected_b",
    [
        ("full_model", [-0.6, 0.0], [0.0, -0.8]),  # all gradients scaled by 1/5 together
        ("norm", [-1.0, 0.0], [0.0, -1.0]),  # each gradient scaled to norm 1 separately (detectron2)
    ],
)
def test_gradient_clipping_types(clip_type, expected_a, expected_b):
    """SGD with lr 1 and no momentum / decay moves each parameter by minus its clipped gradient."""
    cfg = _cfg(OPTIMIZER="SGD", BASE_LR=1.0, MOMENTUM=0.0, WEIGHT_DECAY=0.0, WEIGHT_DECAY_NORM=0.0)
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = clip_type
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0
    cfg.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0
    model = _two_params()
    opt = build_optimizer(cfg, model)
    opt.step()
    assert torch.allclose(model.a.detach(), torch.tensor(expected_a), atol=1e-6)
    assert torch.allclose(model.b.detach(), torch.tensor(expected_b), atol=1e-6)


def test_no_clipping_when_disabled_and_bad_type_rejected():
    cfg = _cfg(OPTIMIZER="ADAMW")
    assert type(build_optimizer(cfg, _two_params())) is torch.optim.AdamW
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full"
    with pytest.raises(ValueError, match="CLIP_TYPE"):
        build_optimizer(cfg, _two_params())
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.0
    with pytest.raises(ValueError, match="CLIP_VALUE"):
        build_optimizer(cfg, _two_params())


@pytest.mark.parametrize("warmup_iters", [0, 4])
def test_poly_schedule(warmup_iters):
    """lr(it) = base * warmup(it) * (1 - it / MAX_ITER) ** POLY_LR_POWER; with WARMUP_ITERS 0 the first step
    already uses the full base lr."""
    cfg = _cfg(BASE_LR=0.5, MAX_ITER=20, POLY_LR_POWER=0.9, WARMUP_ITERS=warmup_iters, WARMUP_FACTOR=0.01,
               WARMUP_METHOD="linear")
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.5)
    sched = build_poly_lr_scheduler(cfg, opt)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    for it in range(warmup_iters, 20):
        assert lrs[it] == pytest.approx(0.5 * (1 - it / 20) ** 0.9, rel=1e-9)
    if warmup_iters:
        assert lrs[0] == pytest.approx(0.5 * 0.01)
    else:
        assert lrs[0] == 0.5


def test_other_schedule_names_are_refused():
    """The config says which schedule trains: detectron2's default name (multi-step, in config dumps of older
    versions) or any other is refused, naming the key, instead of training with poly under another name."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.5)
    assert _cfg().SOLVER.LR_SCHEDULER_NAME == "WarmupPolyLR"
    for name in ("WarmupMultiStepLR", "WarmupCosineLR"):
        with pytest.raises(ValueError, match=f"SOLVER.LR_SCHEDULER_NAME '{name}'.*'WarmupPolyLR'"):
            build_poly_lr_scheduler(_cfg(LR_SCHEDULER_NAME=name), opt)


def test_adamw_is_the_fused_kernel_with_the_for_loop_update():
    """build_optimizer's AdamW runs PyTorch's fused kernel; one step moves every parameter as the default
    for-loop AdamW does, up to float32 rounding of the ~10 operations of the update (|delta| of a few
    ulps of lr-sized steps; asserted at 1e-6 absolute with lr = 1e-2, whose steps are ~1e-2)."""
    torch.manual_seed(0)
    model = _Toy()
    reference = _Toy()
    reference.load_state_dict(model.state_dict())
    cfg = _cfg(BASE_LR=1e-2, OPTIMIZER="ADAMW")
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = False
    opt = build_optimizer(cfg, model)
    assert all(group["fused"] for group in opt.param_groups)
    groups = build_param_groups(reference, base_lr=1e-2, weight_decay=cfg.SOLVER.WEIGHT_DECAY,
                                weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
                                weight_decay_embed=cfg.SOLVER.WEIGHT_DECAY_EMBED, backbone_multiplier=1.0)
    for g in groups:
        g.pop("name")
    ref_opt = torch.optim.AdamW(groups, lr=1e-2, foreach=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for m, o in ((model, opt), (reference, ref_opt)):
        for step in range(3):
            torch.manual_seed(step)
            for p in m.parameters():
                if p.requires_grad:
                    p.grad = torch.randn_like(p)
            o.step()
    moved = 0
    for (k, a), b in zip(model.state_dict().items(), reference.state_dict().values()):
        assert (a - b).abs().max().item() <= 1e-6, k
        moved += int((a - before[k]).abs().max().item() > 1e-3)
    assert moved >= 5  # teeth: the parameters did move


def test_batched_norm_clipping_is_detectrons_per_parameter_clipping():
    """The "norm" type scales each gradient as torch.nn.utils.clip_grad_norm_ on that parameter alone
    (detectron2's clipper): small gradients untouched, large ones to norm CLIP_VALUE; agreement to a few
    float32 ulps (the norm is computed by another kernel)."""
    torch.manual_seed(0)
    grads = [torch.randn(5, 3) * 3, torch.randn(7) * 0.01, torch.randn(2, 2, 3, 3)]
    params = [nn.Parameter(torch.zeros_like(g)) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    cfg = _cfg(OPTIMIZER="SGD", BASE_LR=1.0, MOMENTUM=0.0, WEIGHT_DECAY=0.0, WEIGHT_DECAY_NORM=0.0)
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "norm"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0
    model = nn.ParameterList(params)
    opt = build_optimizer(cfg, model)
    opt.step()
    for p, g in zip(params, grads):
        ref = nn.Parameter(torch.zeros_like(g))
        ref.grad = g.clone()
        torch.nn.utils.clip_grad_norm_([ref], 1.0, 2.0)  # detectron2's clipper, on this parameter alone
        assert (p.detach() + ref.grad).abs().max().item() <= 1e-6  # SGD, lr 1: p = -clipped grad
    assert params[1].detach().abs().max().item() < 0.1  # the small gradient was not scaled up
    assert abs(params[0].detach().norm().item() - 1.0) < 1e-5  # the large one scaled to norm 1
