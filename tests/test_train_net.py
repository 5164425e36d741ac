"""train_net.py end to end on a tiny generated SynthAVS: train, checkpoint, --resume, --eval-only, and
the first-step gradient of a 2-process CPU (gloo) run against a 1-process run with the same global batch."""
import math
import os
import subprocess
import sys

import pytest
import torch

import train_net
from aqformer_d2.data.synthavs import generate_synthavs
from aqformer_d2.engine import AQFormerTrainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "synthavs", "aqformer_tiny_ms3.yaml")


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthavs")
    generate_synthavs(str(root), variant="both", seed=3, n_train=6, n_val=2, n_test=3, image_size=64)
    return str(root)


def _opts(root, out, **extra):
    opts = {
        "DATASETS.SYNTHAVS_ROOT": root, "OUTPUT_DIR": out, "INPUT.IMAGE_SIZE": 64, "SOLVER.IMS_PER_BATCH": 2,
        "SOLVER.WARMUP_ITERS": 0, "SOLVER.BASE_LR": 1e-3, "DATALOADER.NUM_WORKERS": 0, "SEED": 7,
        "MODEL.AQ_TRANSFORMER_DECODER.DEC_STAGES": 1, "TEST.EVAL_PERIOD": 0,
    }
    opts.update(extra)
    return [str(x) for kv in opts.items() for x in kv]


def _args(argv):
    return train_net.default_argument_parser().parse_args(argv)


def test_train_checkpoint_resume_and_eval_only(synth_root, tmp_path):
    out = str(tmp_path / "run")
    opts = _opts(synth_root, out, **{"SOLVER.MAX_ITER": 4, "SOLVER.CHECKPOINT_PERIOD": 2})
    results = train_net.main(_args(["--config-file", CONFIG] + opts))
    assert set(results["avs"]) >= {"mIoU", "Fscore"}
    for name in ("model_0000001.pth", "model_0000003.pth", "model_final.pth", "last_checkpoint"):
        assert os.path.exists(os.path.join(out, name)), name
    final = torch.load(os.path.join(out, "model_final.pth"), map_location="cpu", weights_only=True)
    assert final["iteration"] == 3 and "optimizer" in final["trainer"]["_trainer"]

    # --eval-only with MODEL.WEIGHTS = that checkpoint reproduces the end-of-training metrics
    eval_results = train_net.main(_args(
        ["--config-file", CONFIG, "--eval-only"] + _opts(synth_root, str(tmp_path / "eval"))
        + ["MODEL.WEIGHTS", os.path.join(out, "model_final.pth")]))
    for key in ("mIoU", "Fscore", "mIoU_pooled"):
        assert eval_results["avs"][key] == pytest.approx(results["avs"][key], abs=1e-6), key

    # --resume continues from the checkpoint's iteration (3 -> starts at 4) up to the new MAX_ITER
    cfg = train_net.setup(_args(["--config-file", CONFIG, "--resume"]
                                + _opts(synth_root, out, **{"SOLVER.MAX_ITER": 6, "SOLVER.CHECKPOINT_PERIOD": 2})))
    trainer = AQFormerTrainer(cfg)
    trainer.resume_or_load(resume=True)
    assert trainer.start_iter == 4
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    assert all(torch.equal(before[k], v) for k, v in final["model"].items())
    assert trainer.optimizer.state_dict()["state"], "optimizer state was not restored"
    trainer.train()
    resumed_ck = torch.load(os.path.join(out, "model_final.pth"), map_location="cpu", weights_only=True)
    assert resumed_ck["iteration"] == 5  # iterations 4 and 5 ran after the resume
    resumed = resumed_ck["model"]
    assert any(not torch.equal(before[k], resumed[k]) for k in resumed)


# Relative tolerance of the float64 gradient comparison (derivation: test_two_process_gloo_matches_one_process).
GRAD_RTOL = 1e-7
PROBE = os.path.join(REPO, "tests", "_ddp_grad_probe.py")


def _run_probe(root, out, procs, *extra):
    """tests/_ddp_grad_probe.py in ``procs`` gloo processes; returns the rank -> record dicts."""
    common = {"INPUT.RANDOM_FLIP": "none", "MODEL.TINY_CONVNET.NORM": "", "DATASETS.TEST": "()"}
    cmd = [sys.executable, PROBE, "--probe-out", out, *extra, "--config-file", CONFIG, "--num-gpus", str(procs),
           "--dist-url", "auto"] + _opts(root, os.path.join(out, "output"), **common)
    # 1 thread per process (2 processes on a 2-core machine); the comparison holds for any thread count.
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [torch.load(os.path.join(out, f"rank{r}.pt"), map_location="cpu", weights_only=True) for r in range(procs)]


@pytest.fixture(scope="module")
def gloo_probe(synth_root, tmp_path_factory):
    """First-step gradients: {"one": [rank 0 record] of 1 process, "two": [rank 0, rank 1 records] of 2 gloo
    processes, the latter also with the averaging broken on purpose (--faults)}."""
    out = tmp_path_factory.mktemp("gloo_probe")
    return {"one": _run_probe(synth_root, str(out / "p1"), 1),
            "two": _run_probe(synth_root, str(out / "p2"), 2, "--faults")}


def _relative_error(grads, reference):
    """||grads - reference|| / ||reference|| over all parameters (2-norm), and the 3 worst tensors."""
    assert set(grads) == set(reference)
    diff = {k: (grads[k] - reference[k]).norm().item() for k in reference}
    norm = torch.cat([g.flatten() for g in reference.values()]).norm().item()
    worst = sorted(diff, key=diff.get, reverse=True)[:3]
    return math.sqrt(sum(d * d for d in diff.values())) / norm, {k: diff[k] / norm for k in worst}


def test_two_process_gloo_matches_one_process(gloo_probe):
    """First-step gradient, same global batch of 2 clips: 1 process x 2 clips vs 2 gloo processes x 1 clip,
    through the real path (train_net.setup, AQFormerTrainer with its data loader and
    create_ddp_model_any_device, one run_step; see tests/_ddp_grad_probe.py). BatchNorm is off (its
    statistics would be per process) and flips are off; both runs start from the same weights (same seed
    on rank 0, DDP broadcasts them to rank 1).

    The bound. In exact arithmetic the two gradients are equal: the mask losses are means over the valid
    frames of the batch and every SynthAVS-MS3 clip has 5 valid frames, so the average of the two
    1-clip means (DDP divides the all-reduced sum by 2) is the 2-clip mean; the AVSim loss is a mean over
    clips. In floating point they differ only in the ORDER of the operations: kernels block and split
    their reductions differently for 1 and 2 clips, for other thread counts and vector widths (AVX2,
    AVX-512), and gloo adds the two halves. Two evaluations of a sum of n terms in different orders differ
    by at most 2 gamma_{n-1} sum|terms|, gamma_{n-1} = (n-1)u / (1 - (n-1)u) with u the unit round-off
    (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., section 4.2; any order). So the
    model runs in float64 (u = 2**-53 = 1.1e-16; AQFormer computes in its parameters' dtype), where the
    longest reductions (the mask losses' means over 2 clips x 5 frames x 64 x 64 pixels = 40960 terms)
    carry at most 9.1e-12 of their sum|terms|. The assertion ||g2 - g1|| <= 1e-7 ||g1|| (2-norm over all
    parameters) leaves room for a further factor 1e-7 / 9.1e-12 = 1.1e4 from cancellation and from the
    amplification of these errors through the other layers. It holds on any machine and thread count:
    they change the order, never the precision. (The old float32 comparison of weights after 3 SGD steps
    had u = 6e-8 and a fixed 1e-5 absolute tolerance.)

    Teeth: test_gloo_comparison_catches_broken_averaging shows the same comparison at relative errors of
    order 1 (> 1e6 x GRAD_RTOL) when the all-reduce drops rank 1's gradient or sums instead of averaging.
    """
    (one,), two = gloo_probe["one"], gloo_probe["two"]
    assert sorted(one["video_ids"]) == sorted(two[0]["video_ids"] + two[1]["video_ids"])
    assert len(two[0]["video_ids"]) == len(two[1]["video_ids"]) == 1
    reference = one["grads"]["real"]
    assert reference and all(g.dtype == torch.float64 for g in reference.values())
    for rec in two:
        # same initial weights: rank 0 is seeded like the 1-process run, rank 1 receives DDP's broadcast
        assert all(torch.equal(rec["init"][k], v) for k, v in one["init"].items()), rec["rank"]
        rel, worst = _relative_error(rec["grads"]["real"], reference)
        assert rel <= GRAD_RTOL, f"rank {rec['rank']}: relative error {rel:.3g}; worst tensors {worst}"


@pytest.mark.parametrize("fault", ["drop_rank1", "sum"])
def test_gloo_comparison_catches_broken_averaging(gloo_probe, fault):
    """The comparison above fails by a wide margin when the gradient averaging is wrong: the same batch,
    with a DDP communication hook that drops rank 1's gradient or sums the 2 gradients (tests/_ddp_grad_probe.py
    --faults). Summing doubles the gradient, a relative error of exactly 1; dropping one clip's gradient
    leaves half the other clip's, off by half the dropped clip's gradient, an error of order 1 for two
    different clips. Both are asserted above 0.1 = 1e6 x GRAD_RTOL."""
    reference = gloo_probe["one"][0]["grads"]["real"]
    for rec in gloo_probe["two"]:
        rel, _ = _relative_error(rec["grads"][fault], reference)
        assert rel > 1e6 * GRAD_RTOL, f"rank {rec['rank']}, fault {fault}: relative error only {rel:.3g}"
        if fault == "sum":
            assert rel == pytest.approx(1.0, abs=GRAD_RTOL)
