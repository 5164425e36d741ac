"""Shared fixtures of the benchmark tests."""
import os

import pytest
import torch
from detectron2.utils.env import seed_all_rng

from aqformer_d2.data.synthavs import generate_synthavs
from aqformer_d2.engine import AQFormerTrainer, build_cfg

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
S4_TINY_CONFIG = os.path.join(REPO, "configs", "synthavs", "aqformer_tiny_s4.yaml")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A 2-iteration tiny S4 model on a 32 px SynthAVS-S4 with 3 test clips: ``(config overrides, weights)``."""
    root = tmp_path_factory.mktemp("tiny_s4")
    synth = str(root / "synthavs")
    generate_synthavs(synth, variant="s4", seed=1, n_train=2, n_val=1, n_test=3, image_size=32)
    common = ["DATASETS.SYNTHAVS_ROOT", synth, "INPUT.IMAGE_SIZE", "32"]
    cfg = build_cfg(S4_TINY_CONFIG, common + ["OUTPUT_DIR", str(root / "train"), "SOLVER.IMS_PER_BATCH", "2",
                                              "SOLVER.MAX_ITER", "2", "SOLVER.WARMUP_ITERS", "0",
                                              "DATALOADER.NUM_WORKERS", "0", "DATASETS.TEST", "()", "SEED", "3"])
    # As train_net's default_setup does: seed the generators the model's initialisation draws from, and fix the
    # thread count, so the model (and whether its masks clear the tests' thresholds) does not depend on which
    # tests ran before in this process
    torch.set_num_threads(1)
    seed_all_rng(cfg.SEED)
    trainer = AQFormerTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    return common, str(root / "train" / "model_final.pth")
