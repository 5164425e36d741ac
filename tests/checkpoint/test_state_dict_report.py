"""load_state_dict_with_report: missing / unexpected / mismatched keys, strict mode, logging."""
import logging

import numpy as np
import pytest
import torch
from torch import nn

from aqformer_d2.checkpoint import StateDictLoadError, compare_state_dict, load_state_dict_with_report


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))


def _checkpoint():
    return {
        "0.weight": torch.randn(4, 3, 3, 3),  # loads
        "0.bias": torch.randn(5),  # shape mismatch (model: [4])
        "1.weight": np.full(4, 2.0, dtype=np.float32),  # numpy is accepted
        "1.bias": torch.randn(4),
        "1.running_mean": torch.randn(4),
        "1.running_var": torch.rand(4) + 0.5,
        # "2.weight" and "2.bias" missing; "1.num_batches_tracked" missing but ignorable
        "head.fc.weight": torch.randn(10, 4),  # unexpected
    }


def test_report_lists_each_kind_and_loads_the_rest(caplog):
    net, ckpt = _net(), _checkpoint()
    before_bias = net[0].bias.detach().clone()
    before_linear = net[2].weight.detach().clone()
    with caplog.at_level(logging.INFO, logger="aqformer_d2.checkpoint"):
        report = load_state_dict_with_report(net, ckpt, source="toy.pth")
    assert set(report.missing) == {"2.weight", "2.bias"}
    assert report.unexpected == ("head.fc.weight",)
    assert report.mismatched == (("0.bias", (5,), (4,)),)
    assert set(report.loaded) == {"0.weight", "1.weight", "1.bias", "1.running_mean", "1.running_var"}
    assert report.has_errors
    # loaded values are the checkpoint's; the mismatched and missing ones kept their values
    assert torch.equal(net[0].weight, ckpt["0.weight"])
    assert torch.equal(net[1].weight, torch.full((4,), 2.0))
    assert torch.equal(net[1].running_var, ckpt["1.running_var"])
    assert torch.equal(net[0].bias, before_bias)
    assert torch.equal(net[2].weight, before_linear)
    table = report.table()
    for key in ("0.bias", "2.weight", "2.bias", "head.fc.weight"):
        assert key in table
    assert "shape mismatch" in table and "(5,)" in table
    assert "head.fc.weight" in caplog.text and "toy.pth" in caplog.text


def test_strict_raises_with_table_and_leaves_module_untouched():
    net, ckpt = _net(), _checkpoint()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(StateDictLoadError) as info:
        load_state_dict_with_report(net, ckpt, source="toy.pth", strict=True)
    message = str(info.value)
    assert "toy.pth" in message and "2.weight" in message and "0.bias" in message
    assert set(info.value.report.missing) == {"2.weight", "2.bias"}
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_ignore_unexpected_accepts_extra_keys_only():
    net = _net()
    full = {k: v.clone() + 1 for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    full["head.weight"] = torch.zeros(3)
    report = load_state_dict_with_report(net, full, strict=True, ignore_unexpected=True)
    assert not report.has_errors and report.unexpected == ("head.weight",)
    assert "unexpected (ignored)" in report.table()
    assert torch.equal(net[2].bias, full["2.bias"])
    with pytest.raises(StateDictLoadError):
        load_state_dict_with_report(net, full, strict=True)
    del full["2.bias"]
    with pytest.raises(StateDictLoadError, match="2.bias"):
        load_state_dict_with_report(net, full, strict=True, ignore_unexpected=True)


def test_compare_rejects_non_tensor_values():
    with pytest.raises(TypeError, match="bad.pth.*'0.weight'.*str"):
        compare_state_dict(_net(), {"0.weight": "not a tensor"}, source="bad.pth")
