"""A tiny AQFormer trained for a few dozen iterations on a small generated SynthAVS-S4 (64x64 frames):
weights whose masks depend on the frames and the sound, for the backend parity tests."""
import os
from dataclasses import dataclass
from typing import List

import torch

from aqformer_d2.data.synthavs import generate_synthavs
from aqformer_d2.engine import AQFormerTrainer, build_cfg

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "synthavs", "aqformer_tiny_s4.yaml")
IMAGE_SIZE = 64
ITERATIONS = 60


@dataclass
class TrainedTiny:
    config_file: str
    opts: List[str]  # KEY VALUE ... overrides (dataset root, image size, MODEL.WEIGHTS)
    weights: str
    synth_root: str


def train_tiny(root: str) -> TrainedTiny:
    """Generate SynthAVS-S4 (8 train / 2 val / 2 test clips) under ``root`` and train on it."""
    synth = os.path.join(root, "synthavs")
    generate_synthavs(synth, variant="s4", seed=5, n_train=8, n_val=2, n_test=2, image_size=IMAGE_SIZE)
    out = os.path.join(root, "train")
    common = {"DATASETS.SYNTHAVS_ROOT": synth, "INPUT.IMAGE_SIZE": IMAGE_SIZE}
    train_opts = dict(common, **{
        "OUTPUT_DIR": out, "SOLVER.IMS_PER_BATCH": 2, "SOLVER.MAX_ITER": ITERATIONS, "SOLVER.WARMUP_ITERS": 0,
        "SOLVER.BASE_LR": 2e-3, "SOLVER.CHECKPOINT_PERIOD": 10 ** 6, "DATALOADER.NUM_WORKERS": 0, "SEED": 11,
        "DATASETS.TEST": "()",
    })
    cfg = build_cfg(CONFIG, [str(x) for kv in train_opts.items() for x in kv])
    trainer = AQFormerTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    weights = os.path.join(out, "model_final.pth")
    if not os.path.isfile(weights):
        raise RuntimeError(f"{weights}: training wrote no final checkpoint")
    torch.set_num_threads(1)  # detectron2's trainer leaves the thread count alone; keep the tests' setting
    opts = [str(x) for kv in common.items() for x in kv] + ["MODEL.WEIGHTS", weights]
    return TrainedTiny(config_file=CONFIG, opts=opts, weights=weights, synth_root=synth)


def synthavs_test_clips(trained: TrainedTiny) -> List[dict]:
    """The SynthAVS-S4 test clips of ``trained`` as the dataset mapper gives them at test time
    (``"images"`` uint8 [T, 3, 64, 64], ``"audio"`` [T, 1, 96, 64], ``"masks"`` ...), plus the dataset dict
    under ``"record"`` (frame files, ``audio_wav_file``)."""
    from detectron2.data import DatasetCatalog

    from aqformer_d2.data.dataset_mappers import AVSClipMapper

    cfg = build_cfg(trained.config_file, trained.opts)
    mapper = AVSClipMapper(cfg, is_train=False)
    clips = []
    for record in DatasetCatalog.get("synthavs_s4_test"):
        clip = mapper(record)
        clip["record"] = record
        clips.append(clip)
    return clips
