#!/usr/bin/env python
"""Test helper (not a test module): the gradient of the FIRST training step, through the real path.

    python tests/_ddp_grad_probe.py --probe-out DIR [--faults] \
        --config-file CFG --num-gpus N --dist-url auto KEY VALUE ...

Runs ``N`` processes with the project's ``launch`` (gloo on 127.0.0.1 when there is no CUDA), each doing
what ``train_net.py`` does up to the first optimiser step: ``train_net.setup`` (seeding, dataset
registration), ``AQFormerTrainer`` (real model, optimiser, data loader, and the DistributedDataParallel
wrapper of ``create_ddp_model_any_device``), then one ``run_step``. The model is built in float64
(``model.double()`` before the DDP wrapping), so that the 1-process and N-process gradients differ only
by float64 round-off. The optimiser's ``step`` is replaced by a recorder, so the recorded gradient is the
one DDP left in ``.grad`` (before gradient clipping, which lives in the optimiser's step); no update is
applied.

Each rank writes ``DIR/rank{r}.pt``: ``{"world_size", "rank", "video_ids" (the clips of its batch),
"init" (parameters before the step), "grads": {case: {name: float64 gradient}}}`` with case "real"
for the step above.

``--faults`` (more than one process) then recomputes the gradient of the SAME batch with the averaging
broken on purpose, to prove that the comparison catches it: for each case below, a fresh
``create_ddp_model_any_device`` wrapper of the same module gets a DDP communication hook in place of
DDP's built-in all-reduce, and one forward/backward of the recorded batch runs through it:
  * "drop_rank1": rank 1 contributes zeros to the all-reduce (its clip's gradient is lost);
  * "sum": the all-reduce sums the ranks' gradients instead of averaging them.
"""
import os
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import train_net  # noqa: E402  (imports aqformer_d2 first, as train_net.py requires)
from aqformer_d2.engine import AQFormerTrainer, create_ddp_model_any_device, launch  # noqa: E402

from detectron2.utils import comm  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402


class Float64Trainer(AQFormerTrainer):
    """AQFormerTrainer whose model is converted to float64 before the optimiser and DDP are built."""

    @classmethod
    def build_model(cls, cfg):
        return super().build_model(cfg).double()


def _allreduce_then(buffer: torch.Tensor, divisor: int):
    fut = dist.all_reduce(buffer, async_op=True).get_future()
    return fut.then(lambda f: f.value()[0].div_(divisor))


def _drop_rank1_hook(state, bucket):
    buffer = bucket.buffer()  # flattened gradients of this bucket, [n]
    if dist.get_rank() == 1:
        buffer.zero_()
    return _allreduce_then(buffer, dist.get_world_size())


def _sum_hook(state, bucket):
    return _allreduce_then(bucket.buffer(), 1)


FAULT_HOOKS = {"drop_rank1": _drop_rank1_hook, "sum": _sum_hook}


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def _grads(module: torch.nn.Module) -> dict:
    return {name: p.grad.detach().clone() for name, p in module.named_parameters() if p.grad is not None}


def _faulty_grads(module: torch.nn.Module, batch: list, hook) -> dict:
    """Gradient of ``batch`` through a new DDP wrapper of ``module`` whose all-reduce is ``hook``."""
    ddp = create_ddp_model_any_device(module, broadcast_buffers=False)
    ddp.register_comm_hook(None, hook)
    module.zero_grad(set_to_none=True)
    sum(ddp(batch).values()).backward()
    return _grads(module)


def probe_main(args) -> None:
    cfg = train_net.setup(args)
    trainer = Float64Trainer(cfg)
    module = _unwrap(trainer.model)
    record = {
        "world_size": comm.get_world_size(),
        "rank": comm.get_rank(),
        "init": {name: p.detach().clone() for name, p in module.named_parameters()},
        "grads": {},
    }
    batch = []

    def record_batch(unused_module, inputs):
        batch.extend(inputs[0])

    def record_grads(*unused_args, **unused_kwargs):
        record["grads"]["real"] = _grads(module)

    trainer.model.register_forward_pre_hook(record_batch)
    trainer.optimizer.step = record_grads  # instance attribute: shadows the (clipping) optimiser's step
    with EventStorage(0):
        trainer.iter = 0
        trainer.run_step()
    if "real" not in record["grads"] or not batch:
        raise RuntimeError("_ddp_grad_probe: run_step did not call the model and the optimiser step")
    record["video_ids"] = [clip["video_id"] for clip in batch]
    if args.faults:
        if comm.get_world_size() < 2:
            raise SystemExit("_ddp_grad_probe: --faults needs more than one process")
        for case, hook in FAULT_HOOKS.items():
            record["grads"][case] = _faulty_grads(module, batch, hook)
    os.makedirs(args.probe_out, exist_ok=True)
    torch.save(record, os.path.join(args.probe_out, f"rank{comm.get_rank()}.pt"))


def main(argv=None) -> None:
    parser = train_net.default_argument_parser()
    parser.add_argument("--probe-out", required=True, help="folder for rank{r}.pt")
    parser.add_argument("--faults", action="store_true", help="also record gradients with broken averaging")
    args = parser.parse_args(argv)
    launch(probe_main, args.num_gpus, num_machines=1, machine_rank=0, dist_url=args.dist_url, args=(args,))


if __name__ == "__main__":
    main()
