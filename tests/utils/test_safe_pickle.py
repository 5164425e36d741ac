"""Restricted unpickler: loads tensors / arrays / containers, refuses code-running globals."""
import builtins
import collections
import io
import os
import pickle
import subprocess

import numpy as np
import pytest
import torch

from aqformer_d2.utils.safe_pickle import UnsafePickleError, load_pickle_restricted


class _Reduces:
    """Pickles as ``func(*args)``: what a malicious file does."""

    def __init__(self, func, args):
        self.func = func
        self.args = args

    def __reduce__(self):
        return (self.func, self.args)


def _dump(path, obj, protocol=pickle.HIGHEST_PROTOCOL):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    return str(path)


def test_loads_avsbench_style_tensor_pickle(tmp_path):
    # AVSBench's audio_log_mel/*.pkl: pickle.dump(tensor [5, 1, 96, 64], f)
    logmel = torch.randn(5, 1, 96, 64)
    path = _dump(tmp_path / "clip.pkl", logmel)
    loaded = load_pickle_restricted(path)
    assert isinstance(loaded, torch.Tensor)
    assert loaded.shape == (5, 1, 96, 64) and loaded.dtype == torch.float32
    assert torch.equal(loaded, logmel)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_loads_dict_of_numpy_arrays(tmp_path, protocol):
    weights = collections.OrderedDict(
        conv1_w=np.random.rand(4, 3, 7, 7).astype(np.float32),
        res_conv1_bn_s=np.random.rand(4).astype(np.float64),
        counts=np.arange(6, dtype=np.int64).reshape(2, 3),
    )
    obj = {"model": weights, "__author__": "Detectron2 Model Zoo", "scalar": np.float32(2.5), "tags": {"a", "b"}}
    loaded = load_pickle_restricted(_dump(tmp_path / "R-50.pkl", obj, protocol))
    assert loaded["__author__"] == "Detectron2 Model Zoo"
    assert loaded["tags"] == {"a", "b"} and loaded["scalar"] == np.float32(2.5)
    assert list(loaded["model"]) == list(weights)
    for key, value in weights.items():
        assert loaded["model"][key].dtype == value.dtype
        np.testing.assert_array_equal(loaded["model"][key], value)


def test_loads_parameters_and_dtypes(tmp_path):
    obj = {"p": torch.nn.Parameter(torch.arange(3.0)), "dtype": torch.float16, "size": torch.Size([2, 3])}
    loaded = load_pickle_restricted(_dump(tmp_path / "p.pkl", obj))
    assert isinstance(loaded["p"], torch.nn.Parameter) and torch.equal(loaded["p"].data, torch.arange(3.0))
    assert loaded["dtype"] is torch.float16 and loaded["size"] == torch.Size([2, 3])


@pytest.mark.parametrize(
    "func, global_part",
    [(os.system, "system"), (subprocess.Popen, "subprocess.Popen"), (builtins.eval, "builtins.eval")],
)
def test_refuses_code_execution(tmp_path, func, global_part):
    marker = tmp_path / "pwned"
    if func is builtins.eval:
        args = (f"open({str(marker)!r}, 'w').close()",)
    elif func is subprocess.Popen:
        args = (["touch", str(marker)],)
    else:
        args = (f"touch {marker}",)
    path = _dump(tmp_path / "evil.pkl", {"model": _Reduces(func, args)})
    with pytest.raises(UnsafePickleError) as info:
        load_pickle_restricted(path)
    assert isinstance(info.value, pickle.UnpicklingError)
    message = str(info.value)
    assert path in message and global_part in message
    assert global_part in info.value.global_name and info.value.path == path
    assert not marker.exists()


def test_embedded_storage_bytes_are_read_weights_only(tmp_path):
    # A tensor pickled with pickle stores its data through torch.storage._load_from_bytes, which in torch
    # calls torch.load(weights_only=False). A forged payload there must not run either.
    marker = tmp_path / "pwned"
    inner = io.BytesIO()
    torch.save(_Reduces(os.system, (f"touch {marker}",)), inner, _use_new_zipfile_serialization=False)
    path = _dump(tmp_path / "forged.pkl", _Reduces(torch.storage._load_from_bytes, (inner.getvalue(),)))
    with pytest.raises(pickle.UnpicklingError) as info:
        load_pickle_restricted(path)
    assert path in str(info.value)
    assert not marker.exists()


def test_truncated_and_missing_files_name_the_file(tmp_path):
    good = pickle.dumps({"a": np.zeros(100)})
    truncated = tmp_path / "cut.pkl"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(pickle.UnpicklingError, match="cut.pkl"):
        load_pickle_restricted(truncated)
    with pytest.raises(FileNotFoundError, match="nothere.pkl"):
        load_pickle_restricted(tmp_path / "nothere.pkl")
