"""The config every entry point builds (:func:`build_cfg`), and programmatic train / evaluate helpers shared
by the main job (tools/run_demo_job.py) and the benchmarks. ``train_net.py`` is the command-line equivalent."""
import json
import logging
import os
import time
from typing import Dict, List, Optional, Sequence

import torch

from detectron2.config import CfgNode, get_cfg
from detectron2.utils.logger import setup_logger

from ..config import add_aqformer_config
from ..data import register_avs_datasets_from_cfg
from ..plugins import import_config_modules
from .trainer import AQFormerTrainer

__all__ = ["build_cfg", "train_and_evaluate", "evaluate", "read_loss_history"]

logger = logging.getLogger(__name__)


def build_cfg(config_file: str, opts: Sequence[str] = ()) -> CfgNode:
    """The frozen config of ``config_file`` with ``opts`` (KEY VALUE ...) merged, datasets registered from it.

    The one place where entry points build their config. In order: the modules named by ``IMPORTS`` (file
    and ``opts``) are imported (:func:`aqformer_d2.plugins.import_config_modules`), so that their
    registrations and config extensions exist; then detectron2's defaults, AQFormer's keys and the
    extensions' keys, the file, ``opts``; then AVSBench / SynthAVS are registered at the roots the config
    gives.

    Raises:
        FileNotFoundError: no such config file.
        ValueError: an odd number of ``opts`` items, or ``IMPORTS`` is not a list of module names.
        ImportError: a module of ``IMPORTS`` fails to import (names the module and ``config_file``).
    """
    config_file = os.fspath(config_file)
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"{config_file}: config file not found")
    opts = list(opts)
    if len(opts) % 2:
        raise ValueError(f"{config_file}: config overrides need KEY VALUE pairs, got an odd number of items: {opts}")
    imported = import_config_modules(config_file, opts)
    cfg = get_cfg()
    add_aqformer_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(opts)
    if list(cfg.IMPORTS) != imported:
        raise RuntimeError(f"{config_file}: IMPORTS read before the merge {imported} differ from the merged "
                           f"config's {list(cfg.IMPORTS)}")
    cfg.freeze()
    register_avs_datasets_from_cfg(cfg)
    return cfg


def train_and_evaluate(cfg: CfgNode):
    """Train with :class:`AQFormerTrainer` (single process) and evaluate on ``cfg.DATASETS.TEST``.

    Returns ``(model, results, train_seconds)`` (train_seconds includes that final evaluation);
    ``results`` is the evaluator's dict
    (``{"avs": {"mIoU": ..., "Fscore": ...}}`` for one test dataset).
    """
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    setup_logger(output=cfg.OUTPUT_DIR, name="detectron2")
    setup_logger(output=cfg.OUTPUT_DIR, name="aqformer_d2")
    with open(os.path.join(cfg.OUTPUT_DIR, "config.yaml"), "w") as f:
        f.write(cfg.dump())
    trainer = AQFormerTrainer(cfg)
    trainer.resume_or_load(resume=False)
    start = time.perf_counter()
    results = trainer.train()  # ends with an evaluation on cfg.DATASETS.TEST (detectron2's EvalHook)
    train_seconds = time.perf_counter() - start
    if not results:
        raise RuntimeError(f"train_and_evaluate: no evaluation ran; is DATASETS.TEST empty? ({cfg.DATASETS.TEST})")
    return trainer.model, results, train_seconds


def evaluate(cfg: CfgNode, model: torch.nn.Module, dataset_names: Optional[List[str]] = None) -> Dict:
    """Evaluate ``model`` on ``dataset_names`` (default ``cfg.DATASETS.TEST``) with the AVS evaluator."""
    if dataset_names is not None:
        cfg = cfg.clone()
        cfg.defrost()
        cfg.DATASETS.TEST = tuple(dataset_names)
        cfg.freeze()
    model.eval()
    return AQFormerTrainer.test(cfg, model)


def read_loss_history(output_dir: str, key: str = "total_loss") -> List[tuple]:
    """(iteration, value) pairs of ``key`` from detectron2's ``metrics.json`` in ``output_dir``."""
    path = os.path.join(output_dir, "metrics.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no metrics.json (was the model trained with this OUTPUT_DIR?)")
    history = []
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{line_no}: not a JSON line ({e})") from e
            if key in record and "iteration" in record:
                history.append((int(record["iteration"]), float(record[key])))
    return history
