"""Importing aqformer_d2 registers every component under our own names."""
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import BACKBONE_REGISTRY, META_ARCH_REGISTRY

import aqformer_d2  # noqa: F401
from aqformer_d2.data.dataset_mappers.build import AQ_DATASET_MAPPER_REGISTRY
from aqformer_d2.modeling.audio_encoder.build import AUDIO_ENCODER_REGISTRY
from aqformer_d2.modeling.pixel_decoder.build import AQ_PIXEL_DECODER_REGISTRY
from aqformer_d2.modeling.transformer_decoder.build import AQ_TRANSFORMER_DECODER_REGISTRY


def test_components_are_registered():
    assert META_ARCH_REGISTRY.get("AQFormer").__name__ == "AQFormer"
    assert BACKBONE_REGISTRY.get("AQTimmBackbone") is not None
    assert BACKBONE_REGISTRY.get("build_aq_tiny_convnet") is not None
    assert BACKBONE_REGISTRY.get("build_resnet_backbone") is not None
    assert AUDIO_ENCODER_REGISTRY.get("VGGish").__name__ == "VGGish"
    assert AQ_PIXEL_DECODER_REGISTRY.get("AQPixelDecoder").__name__ == "AQPixelDecoder"
    assert AQ_TRANSFORMER_DECODER_REGISTRY.get("AudioQueriedTransformerDecoder").__name__ == \
        "AudioQueriedTransformerDecoder"
    assert AQ_DATASET_MAPPER_REGISTRY.get("AVSClipMapper").__name__ == "AVSClipMapper"


def test_datasets_are_registered_with_the_avs_evaluator():
    registered = set(DatasetCatalog.list())
    for prefix in ("avsbench", "synthavs"):
        for task in ("s4", "ms3"):
            for split in ("train", "val", "test"):
                name = f"{prefix}_{task}_{split}"
                assert name in registered
                assert MetadataCatalog.get(name).evaluator_type == "avs"


def _imported_modules(path):
    import ast

    tree = ast.parse(path.read_text(), filename=str(path))
    pkg = ".".join(path.relative_to(path.parents[len(path.parts) - path.parts.index("aqformer_d2") - 1]).parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against the module's package
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                yield ".".join(base + ([node.module] if node.module else []))
            else:
                yield node.module


def test_lower_layers_do_not_import_modeling():
    """Imports flow entry points -> data -> modeling; data, evaluation, audio, utils and checkpoint
    never import aqformer_d2.modeling (checked on the import statements themselves)."""
    import pathlib

    root = pathlib.Path(aqformer_d2.__file__).parent
    checked = 0
    for sub in ("data", "evaluation", "audio", "utils", "checkpoint"):
        for path in (root / sub).rglob("*.py"):
            for mod in _imported_modules(path):
                assert not mod.startswith("aqformer_d2.modeling"), f"{path} imports {mod}"
                if sub in ("audio", "utils"):
                    assert not mod.startswith("aqformer_d2.data"), f"{path} imports {mod}"
            checked += 1
    assert checked > 15


def test_only_entry_points_import_inference():
    """aqformer_d2.inference sits above modeling (like engine): no other part of the package imports it,
    and it does not import data or engine."""
    import pathlib

    root = pathlib.Path(aqformer_d2.__file__).parent
    checked = 0
    for path in root.rglob("*.py"):
        inside = path.relative_to(root).parts[0] == "inference"
        for mod in _imported_modules(path):
            if inside:
                assert not mod.startswith(("aqformer_d2.data", "aqformer_d2.engine")), f"{path} imports {mod}"
            else:
                assert not mod.startswith("aqformer_d2.inference"), f"{path} imports {mod}"
        checked += inside
    assert checked >= 4  # the inference modules were found and checked
