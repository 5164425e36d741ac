"""detectron2 trainer for AQFormer: data from the mapper registry, the AVS evaluator, AdamW + poly
schedule, best-checkpoint tracking on mIoU, and DDP that also works for CPU (gloo) processes."""
import logging
import weakref

import torch
from torch.nn.parallel import DistributedDataParallel

from detectron2.data import MetadataCatalog, build_detection_test_loader, build_detection_train_loader
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase, hooks
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..checkpoint import AQCheckpointer
from ..data.dataset_mappers.build import build_aq_dataset_mapper
from ..evaluation import build_avs_evaluator
from .optimizer import build_optimizer, build_poly_lr_scheduler

__all__ = ["AQFormerTrainer", "create_ddp_model_any_device"]


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


class AQFormerTrainer(DefaultTrainer):
    """DefaultTrainer with AQFormer's data, evaluation, optimisation and checkpointing."""

    def __init__(self, cfg):
        # Same steps as DefaultTrainer.__init__, with create_ddp_model_any_device and AQCheckpointer.
        TrainerBase.__init__(self)
        logger = logging.getLogger("detectron2")
        if not logger.isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
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
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if "_trainer" not in state_dict:
            raise KeyError(
                "AQFormerTrainer: the checkpoint's trainer state has no optimizer ('_trainer'); it was not "
                "written by AQFormerTrainer and cannot be resumed. Load it with MODEL.WEIGHTS without --resume."
            )
        self._trainer.load_state_dict(state_dict["_trainer"])

    def build_hooks(self):
        hook_list = super().build_hooks()
        if self.cfg.TEST.EVAL_PERIOD > 0 and comm.is_main_process():
            best = hooks.BestCheckpointer(self.cfg.TEST.EVAL_PERIOD, self.checkpointer, "avs/mIoU", "max",
                                          file_prefix="model_best")
            # after the EvalHook, before the PeriodicWriter (last)
            hook_list.insert(len(hook_list) - 1, best)
        return hook_list

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=build_aq_dataset_mapper(cfg, is_train=True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name, mapper=build_aq_dataset_mapper(cfg, is_train=False))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
        if evaluator_type != "avs":
            raise ValueError(
                f"AQFormerTrainer: dataset '{dataset_name}' has evaluator_type {evaluator_type!r}; only AVS-layout "
                "datasets (evaluator_type 'avs') can be evaluated"
            )
        return build_avs_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_poly_lr_scheduler(cfg, optimizer)
