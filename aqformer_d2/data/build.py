"""The training data loader: an exactly resumable stream of clips.

A detectron2 training loader (``build_detection_train_loader``) draws its data order from a sampler
seeded once per run and its augmentations from whatever state the global / per-worker random number
generators are in. After ``--resume`` both start afresh, so a resumed run sees other clips in another
order with other flips: a different training. Here every random choice is a pure function of the run's
seed and of a position in the sample stream instead:

* the sample stream is infinite; position ``p`` (0, 1, 2, ... over the whole run, all processes
  together) holds dataset index ``perm_e[p mod N]``, where ``e = p // N`` is the epoch and ``perm_e``
  a permutation drawn from ``(seed, e)`` (:class:`ResumableTrainingSampler`);
* the mapper (augmentations) for the clip at position ``p`` runs with the global NumPy, Python and
  torch generators seeded from ``(seed, p)`` (:class:`SeededClipDataset`), so it does not matter which
  process or data-loader worker maps it, nor what ran before;
* iteration ``i`` of a run whose global batch is ``B`` consumes positions ``i*B .. i*B + B - 1``;
  process ``r`` of ``W`` takes the positions ``p = r (mod W)`` among them. A run resumed at iteration
  ``i`` therefore starts at position ``i*B`` (:meth:`ResumableTrainLoader.set_start_iter`), with no
  state to checkpoint but the seed.

Batching keeps the stream order: every clip is resized to the same square size, so detectron2's
aspect-ratio grouping has nothing to group and is not used (``DATALOADER.ASPECT_RATIO_GROUPING`` is
ignored by this loader).
"""
from __future__ import annotations

import logging
import random
from typing import Callable, Iterator, List, Sequence, Tuple

import numpy as np
import torch
import torch.utils.data as torchdata

from detectron2.data import get_detection_dataset_dicts
from detectron2.utils import comm

from ..utils.registry import require_datasets

__all__ = [
    "derive_seed", "seeded_rngs", "ResumableTrainingSampler", "SeededClipDataset",
    "ResumableTrainLoader", "build_aq_train_loader",
]

logger = logging.getLogger(__name__)

# Domain tags, so that the seeds of different purposes never coincide.
SEED_TAG_PERMUTATION = 1
SEED_TAG_SAMPLE = 2
SEED_TAG_STEP = 3  # used by the trainer for the model's own randomness (dropout, ...)
SEED_TAG_LOADER = 4


def derive_seed(seed: int, tag: int, *keys: int) -> int:
    """A 63-bit seed that is a pure function of ``(seed, tag, *keys)`` (NumPy's SeedSequence hash of
    non-negative integers)."""
    words = np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, int(tag)] + [int(k) for k in keys])
    return int(words.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


class seeded_rngs:
    """Context manager: seed the global Python, NumPy and torch CPU generators with ``seed`` and put
    their previous states back on exit, so the code inside is reproducible and the code outside is
    not disturbed by it."""

    def __init__(self, seed: int):
        self.seed = int(seed)

    def __enter__(self):
        self._saved = (random.getstate(), np.random.get_state(), torch.random.get_rng_state())
        random.seed(self.seed)
        np.random.seed(self.seed % (2**32))
        # The CPU generator only: torch.manual_seed would also queue a CUDA seeding call, and in a process
        # without CUDA every queued call formats and keeps a stack trace (~0.5 ms and a few KB per sample).
        torch.random.default_generator.manual_seed(self.seed)
        return self

    def __exit__(self, *exc):
        py_state, np_state, torch_state = self._saved
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.random.set_rng_state(torch_state)
        return False


class ResumableTrainingSampler(torchdata.Sampler):
    """Infinite sampler over ``(position, dataset index)`` pairs for one process.

    Process ``rank`` of ``world_size`` yields the positions ``start + rank, start + rank + world_size,
    ...`` of the global stream, so that the processes together consume the
    stream in order, exactly as one process would.

    Args:
        size: number of clips in the dataset.
        seed: the run's seed (shared by all processes).
        start: first global position (``start_iter * global batch`` when resuming).
        shuffle: shuffle each epoch (otherwise the dataset order).
        rank, world_size: this process and the number of processes.
    """

    def __init__(self, size: int, *, seed: int, start: int = 0, shuffle: bool = True, rank: int = 0,
                 world_size: int = 1):
        if size <= 0:
            raise ValueError(f"ResumableTrainingSampler: the training set is empty (size {size}).")
        self._size, self._seed, self._start = int(size), int(seed), int(start)
        self._shuffle, self._rank, self._world_size = bool(shuffle), int(rank), int(world_size)
        self._perm_epoch, self._perm = None, None

    def _index(self, position: int) -> int:
        epoch, offset = divmod(position, self._size)
        if not self._shuffle:
            return offset
        if epoch != self._perm_epoch:  # epoch e visits every clip once, in a permutation drawn from (seed, e)
            g = torch.Generator().manual_seed(derive_seed(self._seed, SEED_TAG_PERMUTATION, epoch))
            self._perm, self._perm_epoch = torch.randperm(self._size, generator=g).tolist(), epoch
        return self._perm[offset]

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        position = self._start + self._rank
        while True:
            yield position, self._index(position)
            position += self._world_size


class SeededClipDataset(torchdata.Dataset):
    """Map-style dataset indexed by ``(position, dataset index)``: maps ``dataset[index]`` with the
    global generators seeded from ``(seed, position)``.

    Args:
        dataset_dicts: the dataset dicts (list).
        mapper: callable dict -> clip dict (e.g. :class:`AVSClipMapper`). Errors propagate: a clip that
            cannot be read stops the training with the mapper's message (no silent substitution).
        seed: the run's seed.
    """

    def __init__(self, dataset_dicts: Sequence[dict], mapper: Callable[[dict], dict], *, seed: int):
        self._dicts = list(dataset_dicts)
        self._mapper = mapper
        self._seed = int(seed)

    def __len__(self) -> int:
        return len(self._dicts)

    def __getitem__(self, item: Tuple[int, int]) -> dict:
        position, index = item
        with seeded_rngs(derive_seed(self._seed, SEED_TAG_SAMPLE, position)):
            return self._mapper(self._dicts[index])


def _trivial_batch_collator(batch: List[dict]) -> List[dict]:
    return batch


class ResumableTrainLoader:
    """Iterable of training batches (lists of clip dicts) that can start at any iteration.

    Nothing is loaded until the first batch is requested, so :meth:`set_seed` and
    :meth:`set_start_iter` (called when a checkpoint is resumed) take effect on a loader that a trainer
    has already wrapped in ``iter()``.

    Args:
        dataset_dicts: the training dataset dicts.
        mapper: the dataset mapper.
        seed: the run's seed.
        batch_size: clips per batch in THIS process (global batch / number of processes).
        num_workers: data-loader worker processes.
        shuffle: shuffle each epoch.
    """

    def __init__(self, dataset_dicts: Sequence[dict], mapper: Callable[[dict], dict], *, seed: int,
                 batch_size: int, num_workers: int = 0, shuffle: bool = True):
        self._dicts = list(dataset_dicts)
        self._mapper = mapper
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.shuffle = bool(shuffle)
        self.start_iter = 0
        self._started = False

    def _check_not_started(self, what: str) -> None:
        if self._started:
            raise RuntimeError(f"ResumableTrainLoader.{what}: the loader has already produced batches.")

    def set_seed(self, seed: int) -> None:
        self._check_not_started("set_seed")
        self.seed = int(seed)

    def set_start_iter(self, start_iter: int) -> None:
        """Start at iteration ``start_iter``, i.e. at global stream position ``start_iter * global batch``."""
        self._check_not_started("set_start_iter")
        self.start_iter = int(start_iter)

    def __iter__(self) -> Iterator[List[dict]]:
        # A generator: its body (and the DataLoader) starts at the first next(), not at iter().
        self._started = True
        world, rank = comm.get_world_size(), comm.get_rank()
        sampler = ResumableTrainingSampler(
            len(self._dicts), seed=self.seed, start=self.start_iter * self.batch_size * world,
            shuffle=self.shuffle, rank=rank, world_size=world)
        dataset = SeededClipDataset(self._dicts, self._mapper, seed=self.seed)
        loader = torchdata.DataLoader(
            dataset,
            batch_sampler=torchdata.BatchSampler(sampler, self.batch_size, drop_last=True),
            num_workers=self.num_workers,
            collate_fn=_trivial_batch_collator,
            # The workers' base seed is drawn from this generator, not from the global one, so that
            # starting the loader does not move the model's random stream. (The augmentations do not
            # depend on the workers' seeds: SeededClipDataset seeds every clip.)
            generator=torch.Generator().manual_seed(derive_seed(self.seed, SEED_TAG_LOADER)),
            persistent_workers=False,
        )
        yield from loader


def build_aq_train_loader(cfg, mapper: Callable[[dict], dict], *, seed: int) -> ResumableTrainLoader:
    """The training loader of ``cfg``: datasets ``cfg.DATASETS.TRAIN``, global batch
    ``cfg.SOLVER.IMS_PER_BATCH`` split evenly over the processes, ``cfg.DATALOADER.NUM_WORKERS``
    workers per process.

    Raises:
        ValueError: ``DATALOADER.SAMPLER_TRAIN`` is not "TrainingSampler", or the global batch is not a
            multiple of the number of processes.
    """
    if cfg.DATALOADER.SAMPLER_TRAIN != "TrainingSampler":
        raise ValueError(
            f"DATALOADER.SAMPLER_TRAIN = {cfg.DATALOADER.SAMPLER_TRAIN!r}: AQFormer's resumable train loader "
            "implements 'TrainingSampler' (uniform, shuffled epochs) only."
        )
    world = comm.get_world_size()
    total = int(cfg.SOLVER.IMS_PER_BATCH)
    if total <= 0 or total % world != 0:
        raise ValueError(f"SOLVER.IMS_PER_BATCH ({total}) must be a positive multiple of the number of processes ({world}).")
    dicts = get_detection_dataset_dicts(require_datasets(cfg.DATASETS.TRAIN, config_key="DATASETS.TRAIN"),
                                        filter_empty=False)
    logger.info("Resumable train loader: %d clips, seed %d, %d clips per process per iteration, %d workers",
                len(dicts), seed, total // world, cfg.DATALOADER.NUM_WORKERS)
    return ResumableTrainLoader(dicts, mapper, seed=seed, batch_size=total // world,
                                num_workers=cfg.DATALOADER.NUM_WORKERS)
