"""train_net.py end to end on a tiny generated SynthAVS: train, checkpoint, --resume, --eval-only, and
a 2-process CPU (gloo) run against a 1-process run with the same global batch."""
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


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


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


def test_two_process_gloo_matches_one_process(synth_root, tmp_path):
    """Same global batch (2 clips): 1 process x 2 clips vs 2 gloo processes x 1 clip. The tiny model's
    BatchNorm is switched off (its statistics would be per process) and flips disabled. SGD, not AdamW:
    parameters whose gradient is analytically zero (e.g. the key bias of an attention, cancelled by the
    softmax) receive pure round-off, which AdamW would normalise into full-size random steps."""
    common = {"SOLVER.MAX_ITER": 3, "SOLVER.CHECKPOINT_PERIOD": 100, "INPUT.RANDOM_FLIP": "none",
              "SOLVER.OPTIMIZER": "SGD", "SOLVER.BASE_LR": 0.05, "SOLVER.MOMENTUM": 0.9,
              "MODEL.TINY_CONVNET.NORM": "", "DATASETS.TEST": "()"}
    finals = []
    for procs in (1, 2):
        out = str(tmp_path / f"p{procs}")
        cmd = [sys.executable, os.path.join(REPO, "train_net.py"), "--config-file", CONFIG, "--num-gpus", str(procs),
               "--dist-url", "auto"] + _opts(synth_root, out, **common)
        env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        finals.append(_weights(os.path.join(out, "model_final.pth")))
    one, two = finals
    assert set(one) == set(two)
    # Tolerance: float32 sums in a different order (one batch of 2 vs a gloo all-reduce of 2 x 1 clips):
    # elementwise 1e-5 absolute + 1e-4 relative, and 1e-7 on average.
    total_diff, total_count = 0.0, 0
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=1e-5, msg=lambda m: f"{k}: {m}")
        total_diff += (two[k].double() - one[k].double()).abs().sum().item()
        total_count += one[k].numel()
    assert total_diff / total_count < 1e-7
