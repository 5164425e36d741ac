"""aqformer_d2/inference/onnx_export.py: the exported graph, its metadata and the checks on both."""
import onnx
import pytest
import torch
from detectron2.modeling import build_model
from onnx import TensorProto, helper

from aqformer_d2.inference.clip_module import ClipSegmentationModule
from aqformer_d2.inference.onnx_export import check_graph_inputs, export_clip_onnx, parse_clip_metadata

from ..modeling.meta_arch.helpers import TINY_CONFIG, make_cfg


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_model(make_cfg(TINY_CONFIG)).eval()


@pytest.fixture(scope="module")
def exported(tiny_model, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("onnx") / "tiny.onnx")
    written = export_clip_onnx(tiny_model, path, num_frames=5, height=72, width=64, input_format="RGB",
                               extra_metadata={"weights": "w.pth"})
    return path, written


def test_graph_has_both_inputs_and_one_output(exported):
    path, _ = exported
    graph = onnx.load(path).graph
    inputs = {v.name: v.type.tensor_type for v in graph.input}
    assert set(inputs) == {"frames", "audio"}
    assert inputs["frames"].elem_type == TensorProto.UINT8
    assert [d.dim_value for d in inputs["frames"].shape.dim] == [5, 3, 72, 64]
    assert inputs["audio"].elem_type == TensorProto.FLOAT
    assert [d.dim_value for d in inputs["audio"].shape.dim] == [5, 1, 96, 64]
    (output,) = graph.output
    assert output.name == "probs" and [d.dim_value for d in output.type.tensor_type.shape.dim] == [5, 72, 64]
    consumed = {name for node in graph.node for name in node.input}
    assert {"frames", "audio"} <= consumed
    # the deformable attention's sampling is exported as ONNX GridSample, not unrolled or dropped
    assert sum(node.op_type == "GridSample" for node in graph.node) == 3  # one per encoder level, 1 encoder layer


def test_metadata_round_trip(exported):
    path, written = exported
    props = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert props == written
    meta = parse_clip_metadata(props, path)
    assert (meta["num_frames"], meta["height"], meta["width"], meta["input_format"]) == (5, 72, 64, "RGB")
    assert meta["weights"] == "w.pth"


def test_metadata_errors_name_the_file():
    with pytest.raises(ValueError, match=r"x.onnx: no 'aqformer.num_frames' in the model metadata"):
        parse_clip_metadata({"producer": "someone"}, "x.onnx")
    bad = {"aqformer.num_frames": "5", "aqformer.height": "0", "aqformer.width": "64", "aqformer.input_format": "RGB"}
    with pytest.raises(ValueError, match=r"x.onnx: metadata 'aqformer.height' = '0' is not a positive integer"):
        parse_clip_metadata(bad, "x.onnx")


def _graph(frames_used: bool):
    frames = helper.make_tensor_value_info("frames", TensorProto.UINT8, [5, 3, 64, 64])
    audio = helper.make_tensor_value_info("audio", TensorProto.FLOAT, [5, 1, 96, 64])
    probs = helper.make_tensor_value_info("probs", TensorProto.FLOAT, [5, 64, 64])
    nodes = [helper.make_node("ReduceMean", ["audio"], ["probs"], keepdims=0)]
    if frames_used:
        nodes.append(helper.make_node("Cast", ["frames"], ["unused"], to=TensorProto.FLOAT))
    return helper.make_model(helper.make_graph(nodes, "g", [frames, audio], [probs]))


def test_check_graph_inputs_refuses_a_folded_input(tiny_model):
    module = ClipSegmentationModule(tiny_model, 5, 64, 64)
    with pytest.raises(ValueError, match=r"m.onnx: no node of the exported graph reads input 'frames'"):
        check_graph_inputs(_graph(frames_used=False), "m.onnx", module)
    check_graph_inputs(_graph(frames_used=True), "m.onnx", module)  # the same graph reading both passes
    with pytest.raises(ValueError, match=r"m.onnx: input 'frames' is \(type, shape\) \(2, \[5, 3, 64, 64\]\), "
                                         r"expected \(2, \[5, 3, 72, 64\]\)"):
        check_graph_inputs(_graph(frames_used=True), "m.onnx", ClipSegmentationModule(tiny_model, 5, 72, 64))
