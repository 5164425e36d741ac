"""AQCheckpointer writes checkpoints atomically: a save that fails or is SIGKILLed midway never leaves a
half-written file under a checkpoint's name, and ``last_checkpoint`` always names a complete one."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from aqformer_d2.checkpoint import AQCheckpointer
from aqformer_d2.checkpoint import checkpointer as checkpointer_module


class _Holder:
    """A checkpointable (like a trainer): its state says which save it came from."""

    def __init__(self):
        self.step = 0

    def state_dict(self):
        return {"step": self.step}

    def load_state_dict(self, state):
        self.step = state["step"]


def _checkpointer(save_dir, width=8):
    holder = _Holder()
    return AQCheckpointer(nn.Linear(width, width), str(save_dir), trainer=holder), holder


def test_failed_save_keeps_the_previous_checkpoint_tagged(tmp_path, monkeypatch):
    ck, holder = _checkpointer(tmp_path)
    ck.save("model_0000000")
    real_save = torch.save

    def save_half_then_fail(obj, f):
        real_save(obj, f)
        f.truncate(f.tell() // 2)  # a half-written file ...
        raise OSError("No space left on device")  # ... and the write fails

    monkeypatch.setattr(checkpointer_module.torch, "save", save_half_then_fail)
    holder.step = 1
    with pytest.raises(OSError, match="No space left"):
        ck.save("model_0000001")
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000000.pth"]
    assert ck.get_checkpoint_file() == str(tmp_path / "model_0000000.pth")
    monkeypatch.undo()
    ck2, holder2 = _checkpointer(tmp_path)
    ck2.resume_or_load("", resume=True)
    assert holder2.step == 0


SAVER = r"""
import sys, torch
from torch import nn
from aqformer_d2.checkpoint import AQCheckpointer

class Holder:
    step = 0
    def state_dict(self):
        return {"step": self.step}

holder = Holder()
ck = AQCheckpointer(nn.Linear(1024, 1024), sys.argv[1], trainer=holder)  # 4 MiB per checkpoint
while True:
    holder.step += 1
    ck.save(f"model_{holder.step % 3}")  # names are reused: a kill can hit an overwrite
    print(holder.step, flush=True)
"""


@pytest.mark.parametrize("delay", [0.05, 0.3, 0.9])
def test_sigkill_during_saves_leaves_a_loadable_tagged_checkpoint(tmp_path, delay):
    """A process saving checkpoints in a loop is SIGKILLed at an arbitrary moment (whatever it is
    doing then: usually inside torch.save or fsync). Afterwards ``last_checkpoint`` names a file that
    loads completely and holds the last save that returned, or a later one. (With fvcore's plain
    ``save`` this fails within a few tries: a truncated ``.pth`` (EOFError) or an empty
    ``last_checkpoint``, whose write truncates the file first.)"""
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", SAVER, str(out)], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    first = proc.stdout.readline()  # one save completed
    assert first.strip() == "1", first
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    rest = proc.stdout.read()
    proc.wait(timeout=60)
    completed = int(([first] + rest.split())[-1])
    ck, holder = _checkpointer(out, width=1024)
    tagged = ck.get_checkpoint_file()
    assert os.path.basename(tagged).startswith("model_")
    ck.resume_or_load("", resume=True)  # loads the tagged file completely
    assert holder.step >= completed, (holder.step, completed)
    assert os.path.basename(tagged) == f"model_{holder.step % 3}.pth"
    for name in os.listdir(out):  # any other complete-named checkpoint is complete too
        if name.endswith(".pth"):
            torch.load(out / name, map_location="cpu", weights_only=True)
