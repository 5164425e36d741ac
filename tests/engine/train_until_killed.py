"""Driver for tests/engine/test_resume.py: ``train_net.py`` with one extra hook that SIGKILLs the whole
training (every process of its process group, as a preempted machine would) right after iteration K.

    python tests/engine/train_until_killed.py --kill-after-iter K [--restart-data-stream] <train_net.py arguments>

``--restart-data-stream`` (negative control only) makes a resumed run start its data stream at the first
sample instead of the first sample of the first iteration still to run.
"""
import os
import signal
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

import train_net  # noqa: E402
from detectron2.engine import HookBase  # noqa: E402
from detectron2.utils import comm  # noqa: E402

from aqformer_d2.data.build import ResumableTrainLoader  # noqa: E402
from aqformer_d2.engine import AQFormerTrainer, launch  # noqa: E402


class KillAfterIter(HookBase):
    def __init__(self, iteration: int):
        self.iteration = iteration

    def after_step(self):
        if self.trainer.iter == self.iteration and comm.is_main_process():
            os.killpg(os.getpgrp(), signal.SIGKILL)


def run(args, kill_at, restart_data_stream):
    """train_net.main(args) with the hooks of the options (runs in every training process)."""
    if restart_data_stream:
        ResumableTrainLoader.set_start_iter = lambda self, start_iter: None
    if kill_at is not None:
        build_hooks = AQFormerTrainer.build_hooks
        AQFormerTrainer.build_hooks = lambda self: build_hooks(self) + [KillAfterIter(kill_at)]
    return train_net.main(args)


def main(argv):
    kill_at = None
    if "--kill-after-iter" in argv:
        i = argv.index("--kill-after-iter")
        kill_at = int(argv[i + 1])
        del argv[i:i + 2]
    restart_data_stream = "--restart-data-stream" in argv
    if restart_data_stream:
        argv.remove("--restart-data-stream")
    args = train_net.default_argument_parser().parse_args(argv)
    launch(run, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args, kill_at, restart_data_stream))


if __name__ == "__main__":
    main(sys.argv[1:])
