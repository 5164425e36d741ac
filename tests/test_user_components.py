"""Your own components from the command line: the config's IMPORTS, installed plugins (entry points), and
the errors for a module that does not import or a name that is not registered.

The user module and YAML are the README's "Add your own backbone" blocks, written to a temporary
``my_project/`` folder put on PYTHONPATH, and run through train_net.py (1 process and 2 gloo processes),
``--eval-only`` and demo/demo.py as separate processes, as a user runs them."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

import train_net
from aqformer_d2 import plugins
from aqformer_d2.data.synthavs import generate_synthavs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_block(section: str, lang: str) -> str:
    """The first ```lang block of README.md's section ``section`` (a '## ' or '### ' heading)."""
    with open(os.path.join(REPO, "README.md")) as f:
        text = f.read()
    start = text.index(f"\n{section}\n")
    end = text.find("\n## ", start + 1)
    match = re.search(rf"```{lang}\n(.*?)```", text[start:end if end > 0 else None], re.S)
    assert match, f"README: no {lang} block in {section!r}"
    return match.group(1)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """``root/my_project/{my_backbone.py, my_backbone.yaml}`` from the README, ``root/configs`` -> the repo's
    configs (the YAML's _BASE_ is ../configs/...), and a small generated SynthAVS."""
    root = tmp_path_factory.mktemp("user")
    os.symlink(os.path.join(REPO, "configs"), root / "configs")
    (root / "my_project").mkdir()
    (root / "my_project" / "my_backbone.py").write_text(readme_block("## Add your own backbone", "python"))
    (root / "my_project" / "my_backbone.yaml").write_text(readme_block("## Add your own backbone", "yaml"))
    synth = root / "synthavs"
    generate_synthavs(str(synth), variant="s4", seed=3, n_train=4, n_val=1, n_test=2, image_size=64)
    return {"root": root, "config": str(root / "my_project" / "my_backbone.yaml"),
            "pythonpath": str(root / "my_project"), "synth": str(synth)}


def _opts(project, out, **extra):
    opts = {"DATASETS.SYNTHAVS_ROOT": project["synth"], "OUTPUT_DIR": out, "INPUT.IMAGE_SIZE": 64,
            "SOLVER.IMS_PER_BATCH": 2, "SOLVER.MAX_ITER": 2, "SOLVER.WARMUP_ITERS": 0, "SEED": 5,
            "MODEL.AQ_TRANSFORMER_DECODER.DEC_STAGES": 1, "MODEL.MY_BACKBONE.WIDTHS": "[8, 16, 24, 32]"}
    opts.update(extra)
    return [str(x) for kv in opts.items() for x in kv]


def _run(project, script, args):
    # REPO on the path too, so that demo/demo.py (run from demo/) imports this checkout's aqformer_d2
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=os.pathsep.join([project["pythonpath"], REPO]))
    return subprocess.run([sys.executable, os.path.join(REPO, script)] + args, cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)


def _eval_results(out):
    """The summary of the AVS evaluation written to OUTPUT_DIR/inference (the end of training, or --eval-only)."""
    with open(os.path.join(out, "inference", "avs_metrics_per_video.json")) as f:
        saved = json.load(f)
    assert saved["dataset"] == "synthavs_s4_test" and saved["summary"]["num_videos"] == 2
    return saved["summary"]


def _assert_user_backbone(weights):
    """The checkpoint holds MyBackbone's layers at the YAML-overridden widths (8, 16, 24, 32)."""
    model = torch.load(weights, map_location="cpu", weights_only=True)["model"]
    widths = [model[f"backbone.stages.{i}.0.weight"].shape[0] for i in range(4)]
    assert widths == [8, 16, 24, 32]
    assert not any(k.startswith("backbone.stem") for k in model)  # not the tiny ConvNet of the base config


@pytest.fixture(scope="module")
def trained(project, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("train1") / "run")
    proc = _run(project, "train_net.py", ["--config-file", project["config"]] + _opts(project, out))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


def test_train_net_trains_and_evaluates_with_imports(trained):
    _assert_user_backbone(os.path.join(trained, "model_final.pth"))
    results = _eval_results(trained)
    assert 0.0 <= results["mIoU"] <= 1.0 and 0.0 <= results["Fscore"] <= 1.0
    with open(os.path.join(trained, "config.yaml")) as f:
        saved = f.read()
    assert "build_my_backbone" in saved and "my_backbone" in saved


def test_eval_only_with_imports_reproduces_the_final_evaluation(project, trained, tmp_path):
    out = str(tmp_path / "eval")
    proc = _run(project, "train_net.py", ["--config-file", project["config"], "--eval-only"]
                + _opts(project, out, **{"MODEL.WEIGHTS": os.path.join(trained, "model_final.pth")}))
    assert proc.returncode == 0, proc.stderr[-4000:]
    # the same weights on the same clips through the same code with the same thread count: the same float
    # operations in the same order, so the same figures (the margin 1e-6 is test_train_net's)
    evaluated, final = _eval_results(out), _eval_results(trained)
    for key in ("mIoU", "Fscore", "mIoU_pooled"):
        assert evaluated[key] == pytest.approx(final[key], abs=1e-6), key


def test_train_net_two_gloo_processes_with_imports(project, tmp_path):
    """Both processes build the user's backbone: each imports IMPORTS (train_net's setup runs in every
    process launch starts); without it the rank that lacks it fails to build the model."""
    out = str(tmp_path / "gloo")
    proc = _run(project, "train_net.py", ["--config-file", project["config"], "--num-gpus", "2",
                                          "--dist-url", "auto"] + _opts(project, out))
    assert proc.returncode == 0, proc.stderr[-4000:]
    _assert_user_backbone(os.path.join(out, "model_final.pth"))
    results = _eval_results(out)
    assert 0.0 <= results["mIoU"] <= 1.0


def test_demo_runs_with_imports(project, trained, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(5):
        img = np.zeros((48, 64, 3), np.uint8)
        img[:, : (i + 1) * 10] = (200, 100, 30)
        Image.fromarray(img).save(frames / f"frame_{i + 1}.png")
    t = np.arange(5 * 16000) / 16000
    sf.write(str(tmp_path / "sound.wav"), 0.3 * np.sin(2 * np.pi * 440 * t), 16000)
    out = str(tmp_path / "demo")
    proc = _run(project, "demo/demo.py", [
        "--config-file", project["config"], "--input", str(frames), "--audio", str(tmp_path / "sound.wav"),
        "--output", out, "--device", "cpu", "--no-progress", "--opts", "INPUT.IMAGE_SIZE", "64",
        "MODEL.MY_BACKBONE.WIDTHS", "[8, 16, 24, 32]", "MODEL.AQ_TRANSFORMER_DECODER.DEC_STAGES", "1",
        "MODEL.WEIGHTS", os.path.join(trained, "model_final.pth")])
    assert proc.returncode == 0, proc.stderr[-4000:]
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    assert summary["num_sampled_frames"] == 5 and len(os.listdir(os.path.join(out, "masks"))) == 5


def test_misspelled_module_fails_before_any_work(project, tmp_path):
    config = tmp_path / "misspelled.yaml"
    with open(project["config"]) as f:
        text = f.read().replace('"../configs/', f'"{REPO}/configs/')
    config.write_text(text.replace('IMPORTS: ["my_backbone"]', 'IMPORTS: ["my_backbnoe"]'))
    out = str(tmp_path / "never")
    proc = _run(project, "train_net.py", ["--config-file", str(config)] + _opts(project, out))
    assert proc.returncode != 0
    message = proc.stderr
    assert "ImportError" in message
    assert f"{config}: IMPORTS names module 'my_backbnoe', which failed to import" in message
    assert "ModuleNotFoundError: No module named 'my_backbnoe'" in message
    assert "PYTHONPATH" in message
    assert not os.path.exists(out)  # stopped before the output folder, the data or the model

    # the right name without its folder on the path (train_net's command line, in this process): the same
    # error, for 'my_backbone'
    assert "my_backbone" not in sys.modules and not any(p == project["pythonpath"] for p in sys.path)
    with pytest.raises(ImportError, match=r"IMPORTS names module 'my_backbone', which failed to import: "
                                          r"ModuleNotFoundError"):
        train_net.cli(["--config-file", project["config"]] + _opts(project, out))
    assert not os.path.exists(out)


# ----------------------------------------------------------------------------------- in-process checks


def test_imports_follow_the_config_merge_order(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text('IMPORTS: ["json"]\n')
    child = tmp_path / "child.yaml"
    child.write_text('_BASE_: "base.yaml"\n')
    override = tmp_path / "override.yaml"
    override.write_text('_BASE_: "base.yaml"\nIMPORTS: ["csv", "json"]\n')
    assert plugins.imports_of_config(str(base)) == ["json"]
    assert plugins.imports_of_config(str(child)) == ["json"]  # inherited from _BASE_
    assert plugins.imports_of_config(str(override)) == ["csv", "json"]  # the file replaces its base's list
    assert plugins.imports_of_config(str(override), ["IMPORTS", "['shlex']"]) == ["shlex"]  # command line last
    with pytest.raises(ValueError, match=r"IMPORTS must be a list of module names.*got 'json'"):
        plugins.imports_of_config(str(override), ["IMPORTS", "json"])


def test_module_raising_on_import_is_named_with_its_error(tmp_path, monkeypatch):
    from aqformer_d2.engine import build_cfg

    (tmp_path / "aqf_broken_user_module.py").write_text("raise RuntimeError('half-written module')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tmp_path / "c.yaml"
    config.write_text(f'_BASE_: "{REPO}/configs/synthavs/aqformer_tiny_s4.yaml"\nIMPORTS: ["aqf_broken_user_module"]\n')
    with pytest.raises(ImportError) as info:
        build_cfg(str(config))
    assert str(info.value).startswith(f"{config}: IMPORTS names module 'aqf_broken_user_module', which failed")
    assert "RuntimeError: half-written module" in str(info.value)
    assert isinstance(info.value.__cause__, RuntimeError)


def _write_distribution(site, dist, module, code, entry_points):
    (site / f"{module}.py").write_text(code)
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)


PLUGIN_PROBE = """
import json, logging, sys
records = []
class Keep(logging.Handler):
    def emit(self, record):
        records.append({"logger": record.name, "level": record.levelname, "message": record.getMessage()})
logging.getLogger("aqformer_d2").addHandler(Keep())
import aqformer_d2
from detectron2.modeling import BACKBONE_REGISTRY
import train_net
from aqformer_d2 import plugins
from aqformer_d2.engine import build_cfg
from aqformer_d2.modeling import build_aq_backbone
cfg = build_cfg(sys.argv[1], ["MODEL.BACKBONE.NAME", "build_plugin_backbone", "MODEL.PLUGIN_BACKBONE.WIDTH", "6"])
backbone = build_aq_backbone(cfg)
missing = None
try:
    build_aq_backbone(build_cfg(sys.argv[1], ["MODEL.BACKBONE.NAME", "build_nowhere_backbone"]))
except KeyError as e:
    missing = str(e)
print(json.dumps({"records": records, "failed": plugins.failed_plugins(), "width": backbone.width,
                  "registered": "build_plugin_backbone" in BACKBONE_REGISTRY, "missing": missing}))
"""

GOOD_PLUGIN = """
from torch import nn
from detectron2.config import CfgNode as CN
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from aqformer_d2.config import register_config_extension

@register_config_extension
def add_plugin_config(cfg):
    cfg.MODEL.PLUGIN_BACKBONE = CN()
    cfg.MODEL.PLUGIN_BACKBONE.WIDTH = 4

class PluginBackbone(Backbone):
    def __init__(self, width):
        super().__init__()
        self.width = width
        self.conv = nn.Conv2d(3, width, 1)

    def forward(self, x):
        return {"res5": self.conv(x)}

    def output_shape(self):
        return {"res5": ShapeSpec(channels=self.width, stride=1)}

@BACKBONE_REGISTRY.register()
def build_plugin_backbone(cfg, input_shape):
    return PluginBackbone(cfg.MODEL.PLUGIN_BACKBONE.WIDTH)
"""


def test_installed_plugins_are_loaded_and_a_broken_one_is_reported(tmp_path):
    """Three distributions with entry points in 'aqformer_d2.plugins' on sys.path (PYTHONPATH): one that
    registers a backbone and config keys, one whose module raises, one whose module does not exist. The
    good one is usable from a config after a plain `import aqformer_d2`; the two broken ones are logging
    warnings naming them, and the not-registered error lists them."""
    site = tmp_path / "site"
    site.mkdir()
    _write_distribution(site, "aqf_good_plugin", "aqf_good_plugin", GOOD_PLUGIN,
                        "[aqformer_d2.plugins]\ngood = aqf_good_plugin\n")
    _write_distribution(site, "aqf_raising_plugin", "aqf_raising_plugin", "raise ValueError('plugin bug')\n",
                        "[aqformer_d2.plugins]\nraising = aqf_raising_plugin\n")
    _write_distribution(site, "aqf_missing_plugin", "aqf_unrelated", "",
                        "[aqformer_d2.plugins]\nmissing = aqf_no_such_module\n")
    env = dict(os.environ, PYTHONPATH=str(site), OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    config = os.path.join(REPO, "configs", "synthavs", "aqformer_tiny_s4.yaml")
    proc = subprocess.run([sys.executable, "-c", PLUGIN_PROBE, config], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["registered"] and result["width"] == 6  # the plugin's backbone, with its own config key
    warnings = [r for r in result["records"] if r["level"] == "WARNING" and r["logger"] == "aqformer_d2.plugins"]
    assert len(warnings) == 2
    raising = next(w["message"] for w in warnings if "'raising'" in w["message"])
    assert "aqf_raising_plugin" in raising and "ValueError: plugin bug" in raising
    missing = next(w["message"] for w in warnings if "'missing'" in w["message"])
    assert "No module named 'aqf_no_such_module'" in missing
    assert set(result["failed"]) == {"raising", "missing"}
    assert "Installed plugins that failed to import: 'missing'" in result["missing"]
    assert "'raising': ValueError: plugin bug" in result["missing"]


def test_launch_imports_the_parents_modules_in_every_process(tmp_path, monkeypatch):
    """A main_func handed a ready config (no build_cfg in the worker) still finds the user's components:
    launch imports in its workers what the parent imported through IMPORTS."""
    from aqformer_d2.engine import launch

    from ._launch_imports_probe import report_imports

    (tmp_path / "aqf_launch_user_module.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(plugins, "_IMPORTED", [])
    plugins.import_modules(["aqf_launch_user_module"], source="test")
    out = tmp_path / "ranks"
    out.mkdir()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    launch(report_imports, 2, dist_url="auto", args=(str(out), "aqf_launch_user_module"))
    for rank in range(2):
        with open(out / f"rank{rank}.json") as f:
            assert json.load(f) == {"rank": rank, "imported": True}
    sys.modules.pop("aqf_launch_user_module", None)


def _tiny_cfg(*opts):
    from aqformer_d2.engine import build_cfg

    return build_cfg(os.path.join(REPO, "configs", "synthavs", "aqformer_tiny_s4.yaml"), list(opts))


def _build_backbone(cfg):
    from aqformer_d2.modeling import build_aq_backbone

    return build_aq_backbone(cfg)


def _build_audio_encoder(cfg):
    from aqformer_d2.modeling.audio_encoder import build_audio_encoder

    return build_audio_encoder(cfg)


def _build_pixel_decoder(cfg):
    from aqformer_d2.modeling.pixel_decoder import build_aq_pixel_decoder

    return build_aq_pixel_decoder(cfg, _build_backbone(cfg).output_shape())


def _build_transformer_decoder(cfg):
    from aqformer_d2.modeling.transformer_decoder import build_aq_transformer_decoder

    return build_aq_transformer_decoder(cfg)


def _build_mapper(cfg):
    from aqformer_d2.data.dataset_mappers import build_aq_dataset_mapper

    return build_aq_dataset_mapper(cfg, is_train=True)


def _build_model(cfg):
    from aqformer_d2.modeling import build_aq_model

    return build_aq_model(cfg)


def _build_train_loader(cfg):
    from aqformer_d2.engine import AQFormerTrainer

    return AQFormerTrainer.build_train_loader(cfg, seed=0)


def _build_test_loader(cfg):
    from aqformer_d2.engine import AQFormerTrainer

    return AQFormerTrainer.build_test_loader(cfg, cfg.DATASETS.TEST[0])


def _registered(kind):
    from detectron2.data import DatasetCatalog
    from detectron2.modeling import BACKBONE_REGISTRY, META_ARCH_REGISTRY

    from aqformer_d2.data.dataset_mappers import AQ_DATASET_MAPPER_REGISTRY
    from aqformer_d2.modeling.audio_encoder import AUDIO_ENCODER_REGISTRY
    from aqformer_d2.modeling.pixel_decoder import AQ_PIXEL_DECODER_REGISTRY
    from aqformer_d2.modeling.transformer_decoder import AQ_TRANSFORMER_DECODER_REGISTRY

    registries = {"backbone": BACKBONE_REGISTRY, "audio encoder": AUDIO_ENCODER_REGISTRY,
                  "pixel decoder": AQ_PIXEL_DECODER_REGISTRY, "transformer decoder": AQ_TRANSFORMER_DECODER_REGISTRY,
                  "dataset mapper": AQ_DATASET_MAPPER_REGISTRY, "meta-architecture": META_ARCH_REGISTRY}
    if kind == "dataset":
        return DatasetCatalog.list()
    return [name for name, _ in registries[kind]]


@pytest.mark.parametrize("key, value, kind, build", [
    ("MODEL.BACKBONE.NAME", "build_my_backbone", "backbone", _build_backbone),
    ("MODEL.AUDIO_ENCODER.NAME", "MyAudioEncoder", "audio encoder", _build_audio_encoder),
    ("MODEL.AQFORMER.PIXEL_DECODER_NAME", "MyPixelDecoder", "pixel decoder", _build_pixel_decoder),
    ("MODEL.AQFORMER.TRANSFORMER_DECODER_NAME", "MyDecoder", "transformer decoder", _build_transformer_decoder),
    ("INPUT.DATASET_MAPPER_NAME", "MyMapper", "dataset mapper", _build_mapper),
    ("MODEL.META_ARCHITECTURE", "MyArch", "meta-architecture", _build_model),
    ("DATASETS.TRAIN", "('my_dataset_train',)", "dataset", _build_train_loader),
    ("DATASETS.TEST", "('my_dataset_test',)", "dataset", _build_test_loader),
])
def test_missing_registry_name_lists_the_registered_ones(key, value, kind, build):
    cfg = _tiny_cfg(key, value)
    with pytest.raises(KeyError) as info:
        build(cfg)
    message = str(info.value)
    name = value.strip("()',")
    assert message.startswith(f"{key} = {name!r}: no {kind} of that name is registered.")
    registered = _registered(kind)
    assert len(registered) >= 1
    listed = re.search(rf"Registered {kind} names: (.*)\.\n", message).group(1).split(", ")
    assert listed == sorted(registered)
    assert "IMPORTS" in message and "'aqformer_d2.plugins'" in message


def test_misspelled_registry_name_suggests_the_close_one():
    with pytest.raises(KeyError, match=r"Did you mean: 'build_aq_tiny_convnet'\?"):
        _build_backbone(_tiny_cfg("MODEL.BACKBONE.NAME", "build_aq_tiny_convnte"))
