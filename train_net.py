#!/usr/bin/env python
"""Train or evaluate AQFormer with detectron2.

    python train_net.py --config-file configs/avsbench/s4/aqformer_R50.yaml
    python train_net.py --config-file configs/avsbench/s4/aqformer_R50.yaml --eval-only MODEL.WEIGHTS model.pth
    python train_net.py --config-file ... --resume              # continue from OUTPUT_DIR/last_checkpoint
    python train_net.py --config-file ... --num-gpus 2          # 2 processes: GPUs (NCCL) or, without CUDA, CPU (gloo)

Trailing KEY VALUE pairs override the config. Components (backbones, audio encoder, pixel decoder,
transformer decoder, dataset mapper, datasets) are chosen by their registered names in the config; your own
are registered by the modules the config's IMPORTS names (imported in every process) or by installed
plugins (README: "Add your own backbone").
"""
import torch

import aqformer_d2  # noqa: F401  (registers every component; must precede detectron2.engine)
from aqformer_d2.checkpoint import AQCheckpointer
from aqformer_d2.engine import AQFormerTrainer, build_cfg, launch
from aqformer_d2.plugins import import_config_modules

from detectron2.engine import default_argument_parser, default_setup
from detectron2.evaluation import verify_results
from detectron2.utils import comm


def setup(args):
    cfg = build_cfg(args.config_file, args.opts)  # imports IMPORTS, registers the datasets
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(
            f"train_net.py: MODEL.DEVICE is '{cfg.MODEL.DEVICE}' but torch finds no CUDA device; "
            "add 'MODEL.DEVICE cpu' to the command line to run on the CPU."
        )
    default_setup(cfg, args)
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = AQFormerTrainer.build_model(cfg)
        checkpointer = AQCheckpointer(model, save_dir=cfg.OUTPUT_DIR, trust_pickle=cfg.MODEL.WEIGHTS_TRUST_PICKLE)
        checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results = AQFormerTrainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, results)
        return results
    trainer = AQFormerTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def cli(argv=None):
    args = default_argument_parser().parse_args(argv)
    # A module of IMPORTS that does not import fails here, before any process starts; each process imports
    # them again in setup (and launch imports them in its workers).
    import_config_modules(args.config_file, args.opts)
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))


if __name__ == "__main__":
    cli()
