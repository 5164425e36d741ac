"""glibc malloc settings for AQFormer on the CPU (the main job, the benchmarks, your own runs).

Imported by the benchmarks (bench/model_speed.py, bench/train_speed.py) without torch: it must load before
torch does, and the library itself does not need it.

PyTorch takes the memory of large CPU tensors from glibc's malloc. With glibc's defaults, a freed block
above a (dynamic) size threshold is returned to the kernel and the top of the heap is trimmed, so the
activations of the next training step or clip land on fresh pages, and the kernel zero-fills every
4 KiB page on its first touch: 5,000-12,000 page faults per training step of the tiny config, against
about 10 with the settings below. The settings below keep freed memory in the process and back the heap
with transparent huge pages:

- ``MALLOC_MMAP_THRESHOLD_`` 32 MiB: a fixed threshold (glibc's own dynamic one can rise to this value, but
  only after it has returned a block of that size to the kernel);
- ``MALLOC_TRIM_THRESHOLD_`` 4 GiB: freed memory at the top of the heap stays with the process;
- ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``: the heap is advised to use transparent huge pages
  (glibc >= 2.35; older versions ignore the tunable).

Measured on the project's 2-core machine (bench/README.md, "Current figures"): the main job's training
steps 4-7% shorter; R50 inference of the whole model unchanged within noise, the stand-alone R50 backbone
of ``bench/model_speed.py`` 10% faster and the same in every process. The cost: the process keeps its peak heap (``make demo``'s peak RSS 1.47 GB
instead of 1.35 GB).

glibc reads these variables when a process starts, so they are set by whatever starts Python: the
Makefile exports them for ``make demo`` and ``make test`` (tests/bench/test_malloc_env.py checks that it
exports these values), the benchmarks start their measured processes with them (``--malloc default``
measures without), and for your own runs::

    export MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=4294967296 GLIBC_TUNABLES=glibc.malloc.hugetlb=1
"""
from __future__ import annotations

from typing import Dict, Mapping

__all__ = ["MALLOC_ENV", "with_malloc_env", "without_malloc_env"]

MALLOC_ENV: Dict[str, str] = {
    "MALLOC_MMAP_THRESHOLD_": "33554432",
    "MALLOC_TRIM_THRESHOLD_": "4294967296",
    "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1",
}


def with_malloc_env(env: Mapping[str, str]) -> Dict[str, str]:
    """A copy of ``env`` with :data:`MALLOC_ENV` added; variables ``env`` already sets are kept as they are."""
    out = dict(env)
    for key, value in MALLOC_ENV.items():
        out.setdefault(key, value)
    return out


def without_malloc_env(env: Mapping[str, str]) -> Dict[str, str]:
    """A copy of ``env`` without the variables of :data:`MALLOC_ENV` that carry its values (glibc defaults)."""
    return {key: value for key, value in env.items() if MALLOC_ENV.get(key) != value}
