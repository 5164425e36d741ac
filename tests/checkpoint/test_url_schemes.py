"""Weight URLs (torchvision://, torchvggish://, timm://, detectron2://) end to end against a local HTTP server.

Files are built by the tests and served from 127.0.0.1 (see conftest.py); no internet is used. Names whose
released file carries a SHA-256 prefix get a test entry whose name carries the test file's prefix.
"""
import hashlib
import importlib.util
import io
import logging
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torchvision
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone.resnet import build_resnet_backbone
from detectron2.utils.file_io import Detectron2Handler, PathManager
from safetensors.torch import save as safetensors_save
from torch import nn

import aqformer_d2
from aqformer_d2.checkpoint import AQCheckpointer, CheckpointFormatError, WeightDownloadError, WeightHashError
from aqformer_d2.checkpoint import url_schemes
from aqformer_d2.checkpoint.url_schemes import (
    TORCHVGGISH_FILES,
    TORCHVISION_FILES,
    WeightURLHandler,
    fetch_weights,
    resolve_weight_url,
)
from aqformer_d2.modeling.audio_encoder import VGGish
from aqformer_d2.modeling.backbone.timm_backbone import AQTimmBackbone
from aqformer_d2.utils.safe_pickle import UnsafePickleError

from ..modeling.audio_encoder.test_vggish import TINY, tiny_state_dict
from .conftest import closed_port_url, point_schemes_at

pytestmark = pytest.mark.timeout(300)

TOOLS = Path(__file__).resolve().parents[2] / "tools"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _leftovers(folder):
    found = []
    for root, _, names in os.walk(folder):
        found += [os.path.relpath(os.path.join(root, n), folder) for n in names if not n.endswith(".lock")]
    return sorted(found)


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(f"{name}_tool", TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Model(nn.Module):
    """Stands in for the meta-architecture: ``backbone`` and ``audio_encoder`` at their real places."""

    def __init__(self, backbone=None, audio_encoder=None):
        super().__init__()
        if backbone is not None:
            self.backbone = backbone
        if audio_encoder is not None:
            self.audio_encoder = audio_encoder


# ---------------------------------------------------------------- where the URLs come from


def test_urls_match_the_installed_sources():
    # torchvision: the ImageNet weights AVSBench used (IMAGENET1K_V1), from torchvision's own model definition
    assert resolve_weight_url("torchvision://resnet50").download_url == (
        torchvision.models.ResNet50_Weights.IMAGENET1K_V1.url
    )
    assert resolve_weight_url("torchvision://resnet50").hash_prefix == "0676ba61"
    # timm: the Hugging Face file that timm's pretrained config names for pvt_v2_b5 (default tag in1k)
    cfg = timm.models.get_pretrained_cfg("pvt_v2_b5")
    assert cfg.hf_hub_id == "timm/pvt_v2_b5.in1k" and cfg.hf_hub_filename is None
    timm_source = resolve_weight_url("timm://pvt_v2_b5")
    assert timm_source.download_url == "https://huggingface.co/timm/pvt_v2_b5.in1k/resolve/main/model.safetensors"
    assert timm_source.hash_prefix is None
    # torchvggish: harritaylor/torchvggish hubconf.py model_urls
    release = "https://github.com/harritaylor/torchvggish/releases/download/v0.1/"
    assert resolve_weight_url("torchvggish://vggish").download_url == release + "vggish-10086976.pth"
    assert resolve_weight_url("torchvggish://vggish_pca").download_url == release + "vggish_pca_params-970ea276.pth"
    assert resolve_weight_url("torchvggish://vggish").hash_prefix == "10086976"
    # detectron2: the same place detectron2's own handler resolves detectron2:// to
    url = "detectron2://COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x/137849600/model_final_f10217.pkl"
    assert resolve_weight_url(url).download_url == Detectron2Handler.S3_DETECTRON2_PREFIX + url[len("detectron2://"):]


def test_handler_is_registered_for_every_scheme():
    for prefix in ("torchvision://", "torchvggish://", "timm://", "detectron2://", "mask2former://"):
        assert isinstance(PathManager._PathManager__get_path_handler(prefix + "x"), WeightURLHandler), prefix


@pytest.mark.parametrize(
    "url, pattern",
    [
        ("torchvision://resnet51", r"unknown torchvision weights 'resnet51'; known: \['resnet50'\]"),
        ("torchvggish://vgg", r"unknown torchvggish weights 'vgg'"),
        ("timm://no_such_net", r"timm .* has no model named 'no_such_net'"),
        ("detectron2://../etc/passwd", r"must stay below the detectron2 model zoo"),
        ("mask2former://../x.pkl", r"must stay below the mask2former model zoo"),
        ("hub://resnet50", r"not a weight URL"),
    ],
)
def test_bad_names_are_refused_before_any_download(url, pattern):
    with pytest.raises(ValueError, match=pattern):
        resolve_weight_url(url)


def test_cache_layout_follows_aqformer_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("AQFORMER_CACHE", str(tmp_path))
    source = resolve_weight_url("torchvision://resnet50")
    assert source.cache_path == str(tmp_path / "torchvision" / "resnet50-0676ba61.pth")
    assert source.converted_path == str(tmp_path / "torchvision" / "resnet50-0676ba61.d2.pth")


# ---------------------------------------------------------------- torchvision:// (hash prefix in the name)


def _d2_resnet18():
    cfg = get_cfg()
    aqformer_d2.add_aqformer_config(cfg)
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    return _Model(backbone=build_resnet_backbone(cfg, ShapeSpec(channels=3)))


@pytest.fixture(scope="module")
def tv_resnet18_file():
    """(bytes of a torchvision ResNet-18 state dict, the state dict)."""
    torch.manual_seed(0)
    state = torchvision.models.resnet18(weights=None).state_dict()
    gen = torch.Generator().manual_seed(1)
    for key, value in state.items():
        if key.endswith("running_mean"):
            value.copy_(torch.randn(value.shape, generator=gen) * 0.1)
        elif key.endswith("running_var"):
            value.copy_(torch.rand(value.shape, generator=gen) + 0.5)
    return _torch_bytes(state), state


def _serve_torchvision(server, monkeypatch, data, prefix=None):
    """Register ``torchvision://resnet18_test`` for ``data`` (name carries ``prefix``, default: its real one)."""
    filename = f"resnet18-{prefix or _sha256(data)[:8]}.pth"
    monkeypatch.setitem(TORCHVISION_FILES, "resnet18_test", filename)
    server.files[f"/torchvision/{filename}"] = data
    return filename


def _assert_resnet_matches(model, tv_state):
    d2 = model.backbone.state_dict()
    assert torch.equal(d2["stem.conv1.weight"], tv_state["conv1.weight"])
    assert torch.equal(d2["res3.0.shortcut.norm.running_var"], tv_state["layer2.0.downsample.1.running_var"])
    assert torch.equal(d2["res5.1.conv2.weight"], tv_state["layer4.1.conv2.weight"])


def test_torchvision_first_load_downloads_verifies_converts_caches(weights_env, monkeypatch, tv_resnet18_file):
    data, tv_state = tv_resnet18_file
    filename = _serve_torchvision(weights_env, monkeypatch, data)
    cache = weights_env.cache / "torchvision"

    model = _d2_resnet18()
    AQCheckpointer(model).load("torchvision://resnet18_test")  # MODEL.WEIGHTS torchvision://...
    _assert_resnet_matches(model, tv_state)
    assert weights_env.requests == [f"/torchvision/{filename}"]
    converted = filename[: -len(".pth")] + ".d2.pth"
    assert _leftovers(cache) == sorted([filename, filename + ".sha256", converted, converted + ".json"])
    assert (cache / filename).read_bytes() == data
    ckpt = torch.load(cache / converted, weights_only=True)
    assert ckpt["__author__"] == "torchvision" and "backbone.res2.0.conv1.weight" in ckpt["model"]

    # second load: nothing is downloaded (the server is not even reachable) and nothing re-converted
    point_schemes_at(monkeypatch, closed_port_url())
    mtime = os.stat(cache / converted).st_mtime_ns
    fresh = _d2_resnet18()
    AQCheckpointer(fresh).load("torchvision://resnet18_test")
    _assert_resnet_matches(fresh, tv_state)
    assert weights_env.requests == [f"/torchvision/{filename}"]
    assert os.stat(cache / converted).st_mtime_ns == mtime

    # the original form is the released file itself (component options, converter inputs)
    assert fetch_weights("torchvision://resnet18_test", form="original") == str(cache / filename)
    assert PathManager.get_local_path("torchvision://resnet18_test", form="original") == str(cache / filename)


def test_corrupt_converted_file_is_rebuilt(weights_env, monkeypatch, tv_resnet18_file):
    data, tv_state = tv_resnet18_file
    filename = _serve_torchvision(weights_env, monkeypatch, data)
    converted = fetch_weights("torchvision://resnet18_test")
    Path(converted).write_bytes(b"garbage")
    assert fetch_weights("torchvision://resnet18_test") == converted
    model = _d2_resnet18()
    AQCheckpointer(model).load(converted)
    _assert_resnet_matches(model, tv_state)
    assert weights_env.requests == [f"/torchvision/{filename}"]


def test_torchvision_hash_mismatch_is_refused_and_leaves_nothing(weights_env, monkeypatch, tv_resnet18_file):
    data, _ = tv_resnet18_file
    _serve_torchvision(weights_env, monkeypatch, data, prefix="deadbeef")
    with pytest.raises(WeightHashError, match=r"does not start with deadbeef.*refused, nothing was kept"):
        AQCheckpointer(_d2_resnet18()).load("torchvision://resnet18_test")
    assert _leftovers(weights_env.cache) == []


def test_torchvision_cut_off_download_is_refused_and_leaves_nothing(weights_env, monkeypatch, tv_resnet18_file):
    data, _ = tv_resnet18_file
    filename = _serve_torchvision(weights_env, monkeypatch, data)
    weights_env.cut_off.add(f"/torchvision/{filename}")
    with pytest.raises(WeightDownloadError, match=rf"cut off after {len(data) // 2} of {len(data)} bytes"):
        AQCheckpointer(_d2_resnet18()).load("torchvision://resnet18_test")
    assert _leftovers(weights_env.cache) == []


def test_unreachable_server_gives_the_offline_message(monkeypatch, tmp_path):
    monkeypatch.setenv("AQFORMER_CACHE", str(tmp_path / "cache"))
    base = closed_port_url()
    point_schemes_at(monkeypatch, base)
    with pytest.raises(WeightDownloadError) as info:
        AQCheckpointer(_d2_resnet18()).load("torchvision://resnet50")  # the real entry, served nowhere
    message = str(info.value)
    expected_path = tmp_path / "cache" / "torchvision" / "resnet50-0676ba61.pth"
    assert f"could not download {base}/torchvision/resnet50-0676ba61.pth (ConnectionRefusedError" in message
    assert f"The file is expected at {expected_path}." in message
    assert "checked against the SHA-256 prefix 0676ba61" in message
    assert "`python tools/convert_torchvision_resnet.py resnet50-0676ba61.pth resnet50-0676ba61.d2.pth`" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert _leftovers(tmp_path / "cache") == []

    # the original form (component options) points at the local-path route instead
    local_route = r"or pass the downloaded file's local path instead of timm://pvt_v2_b0"
    with pytest.raises(WeightDownloadError, match=local_route):
        AQTimmBackbone(model_name="pvt_v2_b0", out_indices=[0], out_features=["res2"], weights="timm://pvt_v2_b0")


# ---------------------------------------------------------------- timm:// (hash recorded at first download)


def test_timm_url_as_model_weights_and_as_backbone_weights(weights_env):
    torch.manual_seed(3)
    classification = timm.create_model("pvt_v2_b0", pretrained=False)
    state = {k: v.contiguous() for k, v in classification.state_dict().items()}
    data = safetensors_save(state)
    path = "/timm/timm/pvt_v2_b0.in1k/resolve/main/model.safetensors"
    weights_env.files[path] = data

    def backbone(weights=""):
        return AQTimmBackbone(
            model_name="pvt_v2_b0", out_indices=[0, 1, 2, 3], out_features=["res2", "res3", "res4", "res5"],
            weights=weights,
        )

    # MODEL.TIMM_BACKBONE.WEIGHTS timm://pvt_v2_b0: the released file, renamed by the backbone itself
    direct = backbone("timm://pvt_v2_b0")
    assert direct.load_report is not None and not direct.load_report.missing
    cached = weights_env.cache / "timm" / "timm" / "pvt_v2_b0.in1k" / "model.safetensors"
    assert cached.read_bytes() == data
    record = cached.parent / "model.safetensors.sha256"
    assert record.read_text().split()[0] == _sha256(data)

    # MODEL.WEIGHTS timm://pvt_v2_b0: converted on the fly (backbone.body.*), from the cached download
    model = _Model(backbone=backbone())
    AQCheckpointer(model).load("timm://pvt_v2_b0")
    assert weights_env.requests == [path]
    body = model.backbone.body.state_dict()
    assert torch.equal(body["stages_0.blocks.0.attn.q.weight"], state["stages.0.blocks.0.attn.q.weight"])
    assert torch.equal(body["patch_embed.proj.weight"], state["patch_embed.proj.weight"])
    for key, value in direct.body.state_dict().items():
        assert torch.equal(value, body[key]), key


# ---------------------------------------------------------------- torchvggish://


def test_torchvggish_urls_for_the_encoder_options_and_model_weights(weights_env, monkeypatch):
    state = tiny_state_dict(seed=7)
    data = _torch_bytes(state)
    rng = np.random.default_rng(2)
    pca = {"pca_eigen_vectors": rng.standard_normal((8, 8)), "pca_means": rng.standard_normal(8)}
    pca_data = _torch_bytes(pca)
    names = {"vggish_test": f"vggish-{_sha256(data)[:8]}.pth", "vggish_pca_test": f"pca-{_sha256(pca_data)[:8]}.pth"}
    for name, filename in names.items():
        monkeypatch.setitem(TORCHVGGISH_FILES, name, filename)
    no_checkpoint_form = url_schemes._TORCHVGGISH_WITHOUT_CHECKPOINT_FORM
    monkeypatch.setitem(no_checkpoint_form, "vggish_pca_test", "MODEL.AUDIO_ENCODER.PCA_WEIGHTS")
    weights_env.files[f"/torchvggish/{names['vggish_test']}"] = data
    weights_env.files[f"/torchvggish/{names['vggish_pca_test']}"] = pca_data

    # MODEL.AUDIO_ENCODER.WEIGHTS / PCA_WEIGHTS
    encoder = VGGish(**TINY, weights="torchvggish://vggish_test", pca_weights="torchvggish://vggish_pca_test")
    for key, value in state.items():
        assert torch.equal(encoder.state_dict()[key], value), key
    torch.testing.assert_close(encoder.pproc.pca_matrix, torch.as_tensor(pca["pca_eigen_vectors"], dtype=torch.float32))

    # MODEL.WEIGHTS torchvggish://vggish: converted to audio_encoder.* on the fly
    model = _Model(audio_encoder=VGGish(**TINY))
    AQCheckpointer(model).load("torchvggish://vggish_test")
    for key, value in state.items():
        assert torch.equal(model.audio_encoder.state_dict()[key], value), key
    assert sorted(weights_env.requests) == sorted(f"/torchvggish/{f}" for f in names.values())

    pattern = r"torchvggish://vggish_pca_test has no whole-model checkpoint form; pass it as MODEL.AUDIO_ENCODER.PCA"
    with pytest.raises(ValueError, match=pattern):
        AQCheckpointer(model).load("torchvggish://vggish_pca_test")


def test_converter_tools_accept_urls(weights_env, monkeypatch, tmp_path, tv_resnet18_file):
    data, tv_state = tv_resnet18_file
    _serve_torchvision(weights_env, monkeypatch, data)
    out = tmp_path / "r18_d2.pth"
    _load_tool("convert_torchvision_resnet").main(["torchvision://resnet18_test", str(out)])
    model = _d2_resnet18()
    AQCheckpointer(model).load(str(out))
    _assert_resnet_matches(model, tv_state)

    state = tiny_state_dict(seed=9)
    vggish_data = _torch_bytes(state)
    filename = f"vggish-{_sha256(vggish_data)[:8]}.pth"
    monkeypatch.setitem(TORCHVGGISH_FILES, "vggish_test", filename)
    weights_env.files[f"/torchvggish/{filename}"] = vggish_data
    out = tmp_path / "vggish_d2.pth"
    assert _load_tool("convert_vggish").main(["torchvggish://vggish_test", "-o", str(out)]) == 0
    assert torch.equal(torch.load(out, weights_only=True)["model"]["audio_encoder.features.0.weight"],
                       state["features.0.weight"])


# ---------------------------------------------------------------- detectron2:// (safe loaders still apply)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_detectron2_urls_are_cached_and_read_with_the_restricted_unpickler(weights_env, monkeypatch):
    model = _Model(backbone=nn.Conv2d(3, 4, 3))
    expected = {"backbone.weight": np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32),
                "backbone.bias": np.arange(4, dtype=np.float32)}
    # ImageNetPretrained/ files are backbones already: used as they are (no conversion)
    weights_env.files["/detectron2/ImageNetPretrained/tiny/model_final_abc123.pkl"] = pickle.dumps(
        {"model": expected, "__author__": "test"}, protocol=2
    )
    url = "detectron2://ImageNetPretrained/tiny/model_final_abc123.pkl"
    AQCheckpointer(model).load(url)
    assert np.array_equal(model.backbone.weight.detach().numpy(), expected["backbone.weight"])
    local = weights_env.cache / "detectron2" / "ImageNetPretrained" / "tiny" / "model_final_abc123.pkl"
    assert PathManager.get_local_path(url) == str(local)
    assert (Path(str(local) + ".sha256")).is_file()

    point_schemes_at(monkeypatch, closed_port_url())
    fresh = _Model(backbone=nn.Conv2d(3, 4, 3))
    AQCheckpointer(fresh).load(url)
    assert np.array_equal(fresh.backbone.bias.detach().numpy(), expected["backbone.bias"])
    assert weights_env.requests == ["/detectron2/ImageNetPretrained/tiny/model_final_abc123.pkl"]

    point_schemes_at(monkeypatch, weights_env.url)
    weights_env.files["/detectron2/ImageNetPretrained/evil.pkl"] = pickle.dumps({"model": {"x": _Evil()}, "__author__": "x"})
    with pytest.raises(UnsafePickleError, match=r"evil.pkl: refused to unpickle global 'posix.system'"):
        AQCheckpointer(fresh).load("detectron2://ImageNetPretrained/evil.pkl")


@pytest.mark.parametrize("scheme, prefix, zoo_path", [
    ("mask2former", "backbone.", "coco/panoptic/maskformer2_R18_test/model_final_000000.pkl"),
    ("detectron2", "backbone.bottom_up.", "COCO-InstanceSegmentation/mask_rcnn_R_18_test/1/model_final_000000.pkl"),
])
def test_coco_model_zoo_urls_give_their_backbone(weights_env, monkeypatch, caplog, scheme, prefix, zoo_path):
    """MODEL.WEIGHTS mask2former://... or detectron2://<COCO model> loads the model's ResNet backbone and
    reports the skipped head keys in one line; the reduced file is cached, the second load is offline."""
    source = _d2_resnet18()
    rng = np.random.default_rng(1)
    coco = {prefix + k: rng.standard_normal(tuple(v.shape)).astype(np.float32)
            for k, v in source.backbone.state_dict().items()}
    coco.update({"sem_seg_head.predictor.weight": np.ones((3, 3), np.float32),
                 "backbone.fpn_lateral2.weight": np.ones((2, 2), np.float32)})
    weights_env.files[f"/{scheme}/{zoo_path}"] = pickle.dumps({"model": coco, "__author__": "test"}, protocol=2)
    url = f"{scheme}://{zoo_path}"
    model = _d2_resnet18()
    with caplog.at_level(logging.INFO, logger="aqformer_d2.checkpoint.coco_backbone"):
        AQCheckpointer(model).load(url)
    for k, v in model.backbone.state_dict().items():
        assert np.array_equal(v.numpy(), coco[prefix + k]), k
    summary = [r.getMessage() for r in caplog.records if "backbone tensors under" in r.getMessage()]
    assert len(summary) == 1 and f"under '{prefix}'" in summary[0] and "skipped 2 other keys" in summary[0]

    point_schemes_at(monkeypatch, closed_port_url())
    again = _d2_resnet18()
    AQCheckpointer(again).load(url)
    assert torch.equal(again.backbone.res3[0].conv1.weight, model.backbone.res3[0].conv1.weight)
    assert weights_env.requests == [f"/{scheme}/{zoo_path}"]


def test_coco_model_without_resnet_keys_is_refused_by_name(weights_env):
    weights_env.files["/mask2former/coco/x/model_final_1.pkl"] = pickle.dumps(
        {"model": {"sem_seg_head.w": np.ones(2, np.float32)}, "__author__": "test"}, protocol=2)
    with pytest.raises(CheckpointFormatError, match=r"model_final_1.pkl: no backbone key found"):
        AQCheckpointer(_d2_resnet18()).load("mask2former://coco/x/model_final_1.pkl")
