#!/bin/bash
# ABBA pairs: old = commit 391fd24 (checked out in a second worktree, OLD), new = this tree (NEW); 2 threads, malloc tuned
OLD=${OLD:?checkout of 391fd24 with .venv}; NEW=${NEW:-$PWD}; OUT=${OUT:-/tmp/speed}; mkdir -p $OUT
set -u
export OMP_NUM_THREADS=2
old_ms() { (cd $OLD && PYTHONPATH=$OLD .venv/bin/python bench/model_speed.py --configs R50 --no-profile --out $OUT/ms_old_$1.json > $OUT/ms_old_$1.log 2>&1); }
new_ms() { (cd $NEW && .venv/bin/python -m bench.model_speed --configs R50 --no-profile --out $OUT/ms_new_$1.json > $OUT/ms_new_$1.log 2>&1); }
old_ts() { (cd $OLD && PYTHONPATH=$OLD .venv/bin/python bench/train_speed.py --warmup 10 --steps 60 --data $OUT/data --work-dir $OUT/wo --out $OUT/ts_old_$1.json > $OUT/ts_old_$1.log 2>&1); }
new_ts() { (cd $NEW && .venv/bin/python -m bench.train_speed --warmup 10 --steps 60 --data $OUT/data --work-dir $OUT/wn --out $OUT/ts_new_$1.json > $OUT/ts_new_$1.log 2>&1); }
uptime > $OUT/load_start.txt
old_ms 1; new_ms 1; new_ms 2; old_ms 2
old_ts 1; new_ts 1; new_ts 2; old_ts 2
uptime > $OUT/load_end.txt
echo done > $OUT/DONE
