"""The S4/MS3 AQFormer computes what it computed before the AVSS model was added.

``reference_s4_ms3.pt`` was recorded from the main branch before that change (commit and command in
make_s4_ms3_reference.py). For the tiny SynthAVS S4/MS3 models and the paper's R50 S4/MS3 configs, the current
code, given the same config, must run

* the same aten ops, in the same order, on arguments of the same shapes, strides and dtypes, in an inference
  forward and in a training forward + backward (the trace). Kernels run below the dispatcher, so this holds on
  any machine; with the same operands, deterministic kernels then give the same bits as the old code on that
  machine;
* tiny S4 model (whose MODEL section equals the tiny MS3 one): with the stored weights and clips, the same
  inference output, losses and gradients. Bit for bit where the stored values were made (same torch version and
  CPU vector ISA, one thread). Elsewhere float32 round-off differs with the ISA's kernels, so there the values
  are compared to 1e-4 absolute (outputs are probabilities, losses O(1)): a coarse check; the trace is the proof.
"""
import os

import pytest
import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.modeling import build_model

import aqformer_d2.modeling  # noqa: F401  (registration)
from aqformer_d2.config import add_aqformer_config

from .make_s4_ms3_reference import SEED, cpu_capability, op_record, unpack

REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference_s4_ms3.pt")


@pytest.fixture(scope="module")
def reference():
    return torch.load(REFERENCE, weights_only=True)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _cfg(case):
    cfg = get_cfg()
    add_aqformer_config(cfg)
    cfg.merge_from_other_cfg(CfgNode.load_cfg(case["cfg"]))
    return cfg


def _traces(model, clips):
    model.eval()
    recorder = op_record(torch)
    with torch.no_grad(), recorder:
        probs = model(clips)
    eval_ops = recorder.ops
    model.train()
    recorder = op_record(torch)
    with recorder:
        losses = model(clips)
        sum(losses.values()).backward()
    return eval_ops, recorder.ops, probs, losses


def _json_like(ops):
    """Tuples -> lists, as the stored JSON trace has them."""
    return [[name, [[list(shape), list(stride), dtype] for shape, stride, dtype in args]] for name, args in ops]


def _first_difference(got, want):
    for i, (g, w) in enumerate(zip(got, want)):
        if g != w:
            return f"op {i}: now {g}, before {w}"
    return f"lengths differ: now {len(got)} ops, before {len(want)}"


@pytest.mark.parametrize("name", ["tiny_s4", "tiny_ms3", "r50_s4", "r50_ms3"])
def test_same_ops_as_before(reference, name):
    case = reference["cases"][name]
    cfg = _cfg(case)
    assert cfg.MODEL.META_ARCHITECTURE == "AQFormer"
    torch.manual_seed(SEED)
    model = build_model(cfg)
    from .make_s4_ms3_reference import make_clips

    clips = make_clips(torch, [True, False, True, True, False])
    eval_ops, train_ops, _, _ = _traces(model, clips)
    want_eval, want_train = unpack(case["trace_eval"]), unpack(case["trace_train"])
    got_eval, got_train = _json_like(eval_ops), _json_like(train_ops)
    assert got_eval == want_eval, "inference: " + _first_difference(got_eval, want_eval)
    assert got_train == want_train, "training: " + _first_difference(got_train, want_train)


def test_tiny_ms3_model_is_the_tiny_s4_model(reference):
    s4, ms3 = _cfg(reference["cases"]["tiny_s4"]), _cfg(reference["cases"]["tiny_ms3"])
    assert s4.MODEL == ms3.MODEL and s4.INPUT == ms3.INPUT


def test_tiny_s4_values_as_before(reference):
    case = reference["cases"]["tiny_s4"]
    assert case["values"]
    model = build_model(_cfg(case))
    model.load_state_dict(case["state_dict"], strict=True)
    clips = case["clips"]
    _, _, probs, losses = _traces(model, clips)
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert set(losses) == set(case["losses"]) and set(grads) == set(case["grads"])
    got = [p["sound_probs"] for p in probs] + [losses[k].detach() for k in sorted(losses)]
    got += [grads[k] for k in sorted(grads)]
    want = case["sound_probs"] + [case["losses"][k] for k in sorted(case["losses"])]
    want += [case["grads"][k] for k in sorted(case["grads"])]
    same_machine_kind = reference["torch"] == str(torch.__version__) and reference["cpu_capability"] == cpu_capability()
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        if same_machine_kind:
            assert torch.equal(g, w), f"max |difference| {(g - w).abs().max().item():.3e}"
        else:
            torch.testing.assert_close(g, w, rtol=0.0, atol=1e-4)
