"""detectron2 trainer for AQFormer: data from the mapper registry, the AVS evaluator, AdamW + poly
schedule, best-checkpoint tracking on mIoU, and DDP that also works for CPU (gloo) processes."""
import logging
import random
import weakref

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from detectron2.data import build_detection_test_loader
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase, hooks
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..checkpoint import AQCheckpointer
from ..data.build import SEED_TAG_STEP, build_aq_train_loader, derive_seed
from ..data.dataset_mappers.build import build_aq_dataset_mapper
from ..evaluation import best_metric_name, build_aq_evaluator
from ..modeling import build_aq_model
from ..utils.registry import require_datasets
from .optimizer import build_optimizer, build_poly_lr_scheduler

__all__ = ["AQFormerTrainer", "create_ddp_model_any_device", "StepSeedHook", "ResumableBestCheckpointer"]


def create_ddp_model_any_device(model: torch.nn.Module, **kwargs) -> torch.nn.Module:
    """Wrap ``model`` in DistributedDataParallel when there is more than one process.

    Unlike detectron2 v0.6's ``create_ddp_model`` (which always passes ``device_ids``), CPU modules are
    wrapped without ``device_ids``, as DistributedDataParallel requires.
    """
    if comm.get_world_size() == 1:
        return model
    if next(model.parameters()).device.type == "cuda":
        kwargs.setdefault("device_ids", [comm.get_local_rank()])
    return DistributedDataParallel(model, **kwargs)


def run_seed(cfg) -> int:
    """The run's seed: ``cfg.SEED``, or when it is negative one random seed shared by all processes.
    It is stored in every checkpoint, so a resumed run continues with the seed it started with."""
    return int(cfg.SEED) if cfg.SEED >= 0 else int(comm.shared_random_seed())


class StepSeedHook(hooks.HookBase):
    """Before each step, seed the global Python, NumPy and torch generators (CPU and CUDA) from
    ``(run seed, iteration, process rank)``, so that whatever the model draws in step ``i`` (dropout,
    drop-path, sampling) is the same whether the run was resumed or not: no generator state needs to
    be checkpointed, on any process."""

    def __init__(self, seed: int):
        self.seed = int(seed)

    def before_step(self):
        step_seed = derive_seed(self.seed, SEED_TAG_STEP, self.trainer.iter, comm.get_rank())
        random.seed(step_seed)
        np.random.seed(step_seed % (2**32))
        torch.manual_seed(step_seed)  # seeds every CUDA device too


class ResumableBestCheckpointer(hooks.BestCheckpointer):
    """detectron2's BestCheckpointer whose best value so far is part of the checkpoint (v0.6 forgets it
    on resume, and would then overwrite ``model_best`` with the first, possibly worse, evaluation)."""

    def state_dict(self):
        return {"best_metric": self.best_metric, "best_iter": self.best_iter}

    def load_state_dict(self, state_dict):
        self.best_metric = state_dict["best_metric"]
        self.best_iter = state_dict["best_iter"]


class AQFormerTrainer(DefaultTrainer):
    """DefaultTrainer with AQFormer's data, evaluation, optimisation and checkpointing.

    Resumption is exact: the data order and the augmentations are functions of (seed, sample position)
    (:mod:`aqformer_d2.data.build`), the model's randomness a function of (seed, iteration, rank)
    (:class:`StepSeedHook`), and the checkpoint holds the weights, the optimizer, the scheduler, the best
    metric and the seed. A run killed at any point and resumed with ``--resume`` from its last
    checkpoint ends with the same weights as an uninterrupted one (bitwise on the CPU in one process).
    """

    def __init__(self, cfg):
        # Same steps as DefaultTrainer.__init__, with create_ddp_model_any_device and AQCheckpointer.
        TrainerBase.__init__(self)
        logger = logging.getLogger("detectron2")
        if not logger.isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        self.seed = run_seed(cfg)
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg, seed=self.seed)
        model = create_ddp_model_any_device(model, broadcast_buffers=False,
                                            find_unused_parameters=cfg.MODEL.AQFORMER.FIND_UNUSED_PARAMETERS)
        trainer_cls = AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer
        self._trainer = trainer_cls(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = AQCheckpointer(model, cfg.OUTPUT_DIR, trust_pickle=cfg.MODEL.WEIGHTS_TRUST_PICKLE,
                                          trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def train(self):
        """Run training; returns the results of the last evaluation (``{}`` when none ran, e.g. with an
        empty DATASETS.TEST). detectron2 v0.6 returns them only when TEST.EXPECTED_RESULTS is set."""
        super().train()
        return getattr(self, "_last_eval_results", {})

    def state_dict(self):
        # detectron2 v0.6's DefaultTrainer does not checkpoint the optimizer (upstream added this
        # later); without it --resume would restart AdamW's moments from zero.
        ret = super().state_dict()
        ret["_trainer"] = self._trainer.state_dict()
        ret["seed"] = self.seed
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        missing = [k for k in ("_trainer", "seed") if k not in state_dict]
        if missing:
            raise KeyError(
                f"AQFormerTrainer: the checkpoint's trainer state lacks {missing} (optimizer / run seed); it was not "
                "written by this version of AQFormerTrainer and cannot be resumed exactly. Load its weights with "
                "MODEL.WEIGHTS without --resume."
            )
        self._trainer.load_state_dict(state_dict["_trainer"])
        self.seed = int(state_dict["seed"])
        self._trainer.data_loader.set_seed(self.seed)
        for h in self._hooks:
            if isinstance(h, StepSeedHook):
                h.seed = self.seed

    def resume_or_load(self, resume=True):
        super().resume_or_load(resume=resume)
        # The data stream continues at the first sample of the first iteration still to run.
        self._trainer.data_loader.set_start_iter(self.start_iter)

    def build_hooks(self):
        hook_list = [StepSeedHook(self.seed)] + super().build_hooks()
        if self.cfg.TEST.EVAL_PERIOD > 0 and comm.is_main_process():
            metric = best_metric_name(self.cfg, self.cfg.DATASETS.TEST[0]) if self.cfg.DATASETS.TEST else "avs/mIoU"
            best = ResumableBestCheckpointer(self.cfg.TEST.EVAL_PERIOD, self.checkpointer, metric, "max",
                                          file_prefix="model_best")
            # after the EvalHook, before the PeriodicWriter (last)
            hook_list.insert(len(hook_list) - 1, best)
        return hook_list

    @classmethod
    def build_model(cls, cfg):
        """DefaultTrainer.build_model through :func:`aqformer_d2.modeling.build_aq_model` (an unregistered
        MODEL.META_ARCHITECTURE lists the registered ones)."""
        model = build_aq_model(cfg)
        logging.getLogger("detectron2").info("Model:\n%s", model)
        return model

    @classmethod
    def build_train_loader(cls, cfg, seed=None):
        """The resumable train loader (:func:`aqformer_d2.data.build.build_aq_train_loader`); ``seed``
        defaults to :func:`run_seed`."""
        seed = run_seed(cfg) if seed is None else seed
        return build_aq_train_loader(cfg, build_aq_dataset_mapper(cfg, is_train=True), seed=seed)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        require_datasets([dataset_name], config_key="DATASETS.TEST")
        return build_detection_test_loader(cfg, dataset_name, mapper=build_aq_dataset_mapper(cfg, is_train=False))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_aq_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_poly_lr_scheduler(cfg, optimizer)
