"""The resumable train loader: data order and augmentations are functions of (seed, stream position)."""
import itertools
import random

import numpy as np
import pytest
import torch

from aqformer_d2.data.build import ResumableTrainingSampler, ResumableTrainLoader, SeededClipDataset, derive_seed


def _take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_each_epoch_is_a_permutation_and_epochs_differ():
    stream = [i for _, i in _take(ResumableTrainingSampler(7, seed=3), 21)]
    epochs = [stream[0:7], stream[7:14], stream[14:21]]
    assert all(sorted(e) == list(range(7)) for e in epochs)
    assert len({tuple(e) for e in epochs}) == 3
    assert [i for _, i in _take(ResumableTrainingSampler(7, seed=4), 7)] != epochs[0]


def test_start_and_ranks_are_slices_of_one_global_stream():
    full = _take(ResumableTrainingSampler(5, seed=9), 40)
    assert [p for p, _ in full] == list(range(40))
    assert _take(ResumableTrainingSampler(5, seed=9, start=13), 10) == full[13:23]
    for rank in (0, 1, 2):
        part = _take(ResumableTrainingSampler(5, seed=9, start=12, rank=rank, world_size=3), 6)
        assert part == full[12 + rank:30:3]


def _random_mapper(d):
    # draws from all three global generators, as augmentations may
    return (d["id"], random.random(), float(np.random.rand()), torch.rand(()).item())


def test_a_clip_is_mapped_the_same_whatever_ran_before_and_restores_the_generators():
    ds = SeededClipDataset([{"id": i} for i in range(4)], _random_mapper, seed=1)
    a = ds[(17, 2)]
    torch.manual_seed(123)
    np.random.seed(5)
    random.seed(6)
    before = (random.getstate(), np.random.get_state()[1].copy(), torch.random.get_rng_state())
    assert ds[(17, 2)] == a  # same position: same draws, despite other global states
    assert ds[(18, 2)] != a  # another position (e.g. the next epoch's visit): other draws
    assert random.getstate() == before[0]
    assert np.array_equal(np.random.get_state()[1], before[1])
    assert torch.equal(torch.random.get_rng_state(), before[2])


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_started_late_equals_the_tail_of_a_loader_started_at_zero(workers):
    dicts = [{"id": i} for i in range(5)]
    full = list(itertools.islice(iter(ResumableTrainLoader(dicts, _random_mapper, seed=2, batch_size=2,
                                                            num_workers=workers)), 8))
    late = ResumableTrainLoader(dicts, _random_mapper, seed=2, batch_size=2, num_workers=workers)
    it = iter(late)  # a trainer calls iter() at construction, before the checkpoint is loaded
    late.set_start_iter(5)
    assert list(itertools.islice(it, 3)) == full[5:8]
    with pytest.raises(RuntimeError, match="already produced batches"):
        late.set_start_iter(0)


def test_derive_seed_separates_purposes_and_keys():
    seeds = {derive_seed(1, tag, k) for tag in (1, 2, 3) for k in range(100)}
    assert len(seeds) == 300
    assert derive_seed(1, 2, 3) == derive_seed(1, 2, 3) < 2**63
