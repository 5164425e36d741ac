"""Multi-process launch that works on GPUs (NCCL) and on CPUs (gloo).

detectron2 v0.6's ``detectron2.engine.launch`` asserts CUDA and hard-codes NCCL when more than one
process is asked for. This module is the same contract (``launch(main_func, num_processes, ...)``)
with the backend chosen from the hardware: NCCL when CUDA is available, gloo otherwise. It also
creates detectron2's per-machine process group with whichever API the installed detectron2 has, and
imports in every process it starts the modules the parent imported through a config's ``IMPORTS``
(:func:`aqformer_d2.plugins.imported_modules`), so a ``main_func`` handed a ready config finds the
components they register.
"""
import logging
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from detectron2.utils import comm

from ..plugins import import_modules, imported_modules

__all__ = ["launch", "DEFAULT_TIMEOUT"]

DEFAULT_TIMEOUT = timedelta(minutes=30)
logger = logging.getLogger(__name__)


def _find_free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def launch(main_func, num_processes_per_machine: int, num_machines: int = 1, machine_rank: int = 0,
           dist_url: str = None, args=(), timeout: timedelta = DEFAULT_TIMEOUT) -> None:
    """Run ``main_func(*args)`` in ``num_processes_per_machine * num_machines`` processes.

    Args:
        main_func: the function each process runs.
        num_processes_per_machine: processes on this machine (one per GPU; on a machine without CUDA,
            CPU processes communicating over gloo).
        num_machines, machine_rank: multi-machine set-up, as detectron2.
        dist_url: "tcp://host:port" of machine 0, or "auto" (single machine only).
        args: arguments of ``main_func``.
        timeout: process-group timeout.
    """
    world_size = num_machines * num_processes_per_machine
    if world_size <= 1:
        main_func(*args)
        return
    if dist_url is None or dist_url == "auto":
        if num_machines != 1:
            raise ValueError("launch: dist_url='auto' only works on one machine; give tcp://HOST:PORT")
        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    if torch.cuda.is_available() and num_processes_per_machine > torch.cuda.device_count():
        raise ValueError(
            f"launch: {num_processes_per_machine} processes asked for but only {torch.cuda.device_count()} GPUs"
        )
    mp.start_processes(
        _worker,
        nprocs=num_processes_per_machine,
        args=(main_func, world_size, num_processes_per_machine, machine_rank, dist_url, args, timeout,
              imported_modules()),
        daemon=False,
        start_method="spawn",
    )


def _create_local_group(num_per_machine: int, machine_rank: int, world_size: int) -> None:
    # Newer detectron2 has comm.create_local_process_group; v0.6 keeps the group in a module global.
    if hasattr(comm, "create_local_process_group"):
        comm.create_local_process_group(num_per_machine)
        return
    for i in range(world_size // num_per_machine):
        ranks = list(range(i * num_per_machine, (i + 1) * num_per_machine))
        group = dist.new_group(ranks)
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group


def _worker(local_rank, main_func, world_size, num_per_machine, machine_rank, dist_url, args, timeout, imports):
    import aqformer_d2  # noqa: F401  (registers components and installed plugins in the spawned process)

    import_modules(imports, source="IMPORTS of the config the launching process read")

    global_rank = machine_rank * num_per_machine + local_rank
    backend = _backend()
    dist.init_process_group(backend=backend, init_method=dist_url, world_size=world_size, rank=global_rank,
                            timeout=timeout)
    _create_local_group(num_per_machine, machine_rank, world_size)
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    comm.synchronize()
    main_func(*args)
    dist.destroy_process_group()
