"""Installs the aqformer_d2 detectron2 plugin.

torch, torchvision, torchaudio and detectron2 are deliberately not listed in install_requires:
detectron2 is not on PyPI, and GPU users bring their own torch/detectron2 builds. ``tools/setup_env.sh``
installs the pinned CPU stack used by this repository's tests.
"""
from setuptools import find_packages, setup

setup(
    name="aqformer_d2",
    version="0.1.0",
    description="AQFormer (IJCAI 2023) audio-visual segmentation as a detectron2 plugin",
    python_requires=">=3.9",
    packages=find_packages(include=["aqformer_d2", "aqformer_d2.*"]),
    install_requires=[
        "fvcore",
        "iopath",
        "timm>=0.9",
        "numpy",
        "opencv-python",
        "pycocotools",
        "soundfile",
        "av",
        "safetensors",
        "tqdm",
        "onnx",
        "onnxruntime",
    ],
    extras_require={"test": ["pytest", "pytest-timeout", "pytest-xdist"]},
)
