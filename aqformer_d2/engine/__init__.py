"""Training support: trainer, optimizer/schedule and a launch that also works on CPU (gloo)."""
from .experiment import build_cfg, evaluate, read_loss_history, train_and_evaluate
from .launch import launch
from .listening import (
    MinAreaRule, condition_dataset, evaluate_listening, listening_conditions, pathway_conditions, summarise_listening,
)
from .optimizer import build_optimizer, build_param_groups, build_poly_lr_scheduler
from .trainer import AQFormerTrainer, create_ddp_model_any_device

__all__ = [
    "AQFormerTrainer", "build_cfg", "evaluate", "read_loss_history", "train_and_evaluate", "build_optimizer", "build_param_groups", "build_poly_lr_scheduler",
    "create_ddp_model_any_device", "launch", "MinAreaRule", "condition_dataset", "evaluate_listening", "listening_conditions", "pathway_conditions",
    "summarise_listening",
]
