# The two commands of the README's quick start. Each sets up .venv on first use (tools/setup_env.sh).
PY := .venv/bin/python
export OMP_NUM_THREADS ?= 2

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
