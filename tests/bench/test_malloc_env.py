"""bench/malloc_env.py: the glibc malloc settings, and the Makefile exports the same ones."""
import os
import re

from bench.malloc_env import MALLOC_ENV, with_malloc_env, without_malloc_env

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_makefile_exports_the_same_settings():
    with open(os.path.join(REPO, "Makefile")) as f:
        exported = dict(re.findall(r"^export (\w+) \?= (\S+)$", f.read(), flags=re.M))
    assert {k: exported.get(k) for k in MALLOC_ENV} == MALLOC_ENV


def test_with_and_without_keep_what_the_user_set():
    env = {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"}
    tuned = with_malloc_env(env)
    assert tuned["GLIBC_TUNABLES"] == "glibc.malloc.tcache_count=0"  # the user's own value is kept
    assert tuned["MALLOC_MMAP_THRESHOLD_"] == MALLOC_ENV["MALLOC_MMAP_THRESHOLD_"] and tuned["PATH"] == "/bin"
    back = without_malloc_env(tuned)
    assert back == env  # ours removed, the user's GLIBC_TUNABLES left
    assert env == {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"}  # inputs not modified
