# The two commands of the README's quick start. Each sets up .venv on first use (tools/setup_env.sh).
PY := .venv/bin/python
export OMP_NUM_THREADS ?= 2
# glibc malloc settings for PyTorch's CPU tensors (why: bench/malloc_env.py; a test checks that these
# values are the ones listed there): fewer page faults, 4-7% shorter training steps on the CPU.
export MALLOC_MMAP_THRESHOLD_ ?= 33554432
export MALLOC_TRIM_THRESHOLD_ ?= 4294967296
export GLIBC_TUNABLES ?= glibc.malloc.hugetlb=1

.PHONY: env demo test

env:
	bash tools/setup_env.sh

# The main job: generate SynthAVS (if absent), train the tiny config on the CPU, evaluate, write
# metrics, a loss curve and mask overlays under output/synthavs_demo.
demo: env
	$(PY) tools/run_demo_job.py --output output/synthavs_demo

# The test suite (what CI runs).
test: env
	$(PY) -m pytest tests -n 2 --dist loadfile
