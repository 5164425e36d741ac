"""Dataset mapper: AVSBench-layout dataset dict -> clip dict of docs/interfaces.md.

One clip = T frames + T one-second audio examples + the masks that exist. In training ONE random
geometric augmentation is drawn per clip (from its first frame) and applied identically to all T
frames and masks, so the audio-visual correspondence across frames is preserved.
"""
from __future__ import annotations

import copy
import logging
from collections import Counter
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from ...audio.logmel import wav_file_to_examples
from ...utils.safe_pickle import load_pickle_restricted
from ..datasets.audio_controls import AUDIO_PATHWAYS
from ..datasets.register_avsbench import read_avs_mask
from ..negative_audio import NegativeAudioSampler, check_negative_spec, negative_examples
from .build import AQ_DATASET_MAPPER_REGISTRY

__all__ = [
    "AVSClipMapper", "load_audio_examples", "build_avs_augmentations", "check_frame_sizes", "AUDIO_EXAMPLE_SHAPE",
    "read_frame", "augment_clip",
]

logger = logging.getLogger(__name__)

# One VGGish log-mel example: [1, 96, 64] (channel, 96 frames of 10 ms, 64 mel bands).
AUDIO_EXAMPLE_SHAPE = (1, 96, 64)


def load_audio_examples(dataset_dict: dict, source: str, num_frames: int) -> torch.Tensor:
    """Audio of one clip as float32 ``[T, 1, 96, 64]`` log-mel examples.

    Args:
        dataset_dict: dataset dict with "audio_logmel_file" / "audio_wav_file".
        source: "logmel": the precomputed ``.pkl`` (unpickled with the restricted unpickler, which
            refuses anything but tensors / arrays); "wav": computed from the WAV file.
        num_frames: T.

    Raises:
        ValueError: unknown source, or content of the wrong type / shape (message names the file).
    """
    if source == "logmel":
        path = dataset_dict["audio_logmel_file"]
        obj = load_pickle_restricted(path)
        if isinstance(obj, np.ndarray):
            obj = torch.from_numpy(np.ascontiguousarray(obj))
        if not isinstance(obj, torch.Tensor):
            raise ValueError(f"{path}: expected a tensor or array of log-mel examples, got {type(obj).__name__}.")
        audio = obj.detach().to(torch.float32)
    elif source == "wav":
        path = dataset_dict["audio_wav_file"]
        audio = torch.as_tensor(wav_file_to_examples(path, num_examples=num_frames), dtype=torch.float32)
    else:
        raise ValueError(f"Unknown audio source {source!r}; expected 'logmel' or 'wav'.")
    expected = (num_frames,) + AUDIO_EXAMPLE_SHAPE
    if tuple(audio.shape) != expected:
        raise ValueError(f"{path}: audio examples have shape {list(audio.shape)}, expected {list(expected)}.")
    if not torch.isfinite(audio).all():
        raise ValueError(f"{path}: audio examples contain NaN or infinite values.")
    return audio.contiguous()  # [T, 1, 96, 64]


def build_avs_augmentations(cfg, is_train: bool) -> List[T.Augmentation]:
    """Resize to ``INPUT.IMAGE_SIZE`` square; in training also a random flip (``INPUT.RANDOM_FLIP``:
    "horizontal" / "vertical" / "none") and, when ``INPUT.CROP.ENABLED`` (detectron2's key), a random
    crop (``INPUT.CROP.TYPE`` / ``INPUT.CROP.SIZE``) resized back to the square size (scale augmentation)."""
    size = int(cfg.INPUT.IMAGE_SIZE)
    augs: List[T.Augmentation] = [T.Resize((size, size))]
    if not is_train:
        return augs
    flip = cfg.INPUT.RANDOM_FLIP
    if flip in ("horizontal", "vertical"):
        augs.append(T.RandomFlip(horizontal=flip == "horizontal", vertical=flip == "vertical"))
    elif flip not in ("none", ""):
        raise ValueError(f"cfg.INPUT.RANDOM_FLIP = {flip!r}; expected 'horizontal', 'vertical' or 'none'.")
    if cfg.INPUT.CROP.ENABLED:
        augs.append(T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
        augs.append(T.Resize((size, size)))
    return augs


def read_frame(path: str, image_format: str) -> np.ndarray:
    """uint8 ``[H0, W0, 3]`` frame in ``image_format`` channel order; errors name the file."""
    try:
        image = utils.read_image(path, format=image_format)  # [H0, W0, 3] uint8
    except OSError as e:
        raise OSError(f"Cannot read frame {path}: {e}") from e
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"Frame {path} has shape {image.shape} in format {image_format}; expected [H, W, 3].")
    return image


def augment_clip(augmentations: T.AugmentationList, frames: List[np.ndarray]) -> Tuple[List[np.ndarray], T.Transform]:
    """Draw the (random) geometric augmentation ONCE for the clip, from its first frame, and apply it to all
    T frames ``[H0, W0, 3]``; returns the frames ``[H, W, 3]`` and the transform (for the masks / labels)."""
    aug_input = T.AugInput(frames[0])
    transforms = augmentations(aug_input)
    return [aug_input.image] + [transforms.apply_image(f) for f in frames[1:]], transforms


def _hxw(size: Sequence[int]) -> str:
    return f"{size[0]}x{size[1]}"


def _odd_ones_out(sizes: Sequence[Tuple[int, int]]) -> Optional[List[int]]:
    """Indices of the frames whose size differs from the majority size, or None without a strict majority."""
    ranked = Counter(sizes).most_common()
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        return None
    return [t for t, size in enumerate(sizes) if size != ranked[0][0]]


def check_frame_sizes(
    video_id: Optional[str], frame_files: Sequence[str], sizes: Sequence[Tuple[int, int]], dict_hw: Tuple[int, int]
) -> None:
    """Check that all frames of a clip have the same (H, W), equal to the dataset dict's height/width.

    Args:
        video_id: the clip's name, for the message.
        frame_files: the T frame paths.
        sizes: the T frame sizes (H, W) as read.
        dict_hw: the dataset dict's (height, width); registration reads them from the FIRST frame, so
            when frame 1 is the odd one out they are its size, not the clip's.

    Raises:
        ValueError: the frames disagree (the message lists every frame with its HxW and names the
            odd one(s) out: the frames not of the majority size), or they agree with each other but
            not with the dataset dict.
    """
    sizes = [tuple(int(v) for v in size) for size in sizes]
    if len(set(sizes)) == 1:
        if sizes[0] != tuple(dict_hw):
            raise ValueError(
                f"Video {video_id!r}: all {len(sizes)} frames are {_hxw(sizes[0])} (HxW), but the dataset dict "
                f"says {_hxw(dict_hw)} (height/width, read from {frame_files[0]} when the dataset was loaded; "
                "was the file replaced since?)."
            )
        return
    odd = _odd_ones_out(sizes)
    marks = ["  <-- odd one out" if odd is not None and t in odd else "" for t in range(len(sizes))]
    listing = "\n".join(f"  {p}: {_hxw(s)}{m}" for p, s, m in zip(frame_files, sizes, marks))
    if odd is None:
        verdict = "no size is shared by a majority of them, so every frame is listed"
    else:
        names = ", ".join(f"{frame_files[t]} ({_hxw(sizes[t])})" for t in odd)
        verdict = f"odd one(s) out (the others are {_hxw(Counter(sizes).most_common(1)[0][0])}): {names}"
    raise ValueError(
        f"Video {video_id!r}: its {len(sizes)} frames do not all have the same size; {verdict}. "
        f"Frames (HxW):\n{listing}"
    )


@AQ_DATASET_MAPPER_REGISTRY.register()
class AVSClipMapper:
    """Map an AVSBench-layout dataset dict to the AQFormer clip dict.

    Output (docs/interfaces.md): "images" uint8 ``[T, 3, H, W]`` (``image_format`` channel order),
    "audio" float32 ``[T, 1, 96, 64]``, and when the video has at least one mask: "masks" uint8
    ``[T, H, W]`` in {0, 1} (zeros for unlabelled frames) + "mask_valid" bool ``[T]``; "height",
    "width" (original frame size), "video_id", "frame_files", "mask_files" passed through; for a clip
    that hears negative audio, its spec as "negative_audio" (then "audio" is the negative and "masks" are
    empty); "pathway_audio" (pathway -> float32 ``[T, 1, 96, 64]``) for a clip whose dict names audio for
    some pathways only ("pathway_audio_files": another clip's files; "pathway_negative_audio": negative
    specs). H = W = the resize size.
    """

    @configurable
    def __init__(
        self,
        *,
        is_train: bool,
        augmentations: Sequence[T.Augmentation],
        image_format: str,
        num_frames: int,
        audio_source: str,
        zero_audio: bool = False,
        negative_audio: Optional[NegativeAudioSampler] = None,
    ):
        """
        Args:
            is_train: training mode (only used for logging; randomness lives in ``augmentations``).
            augmentations: detectron2 augmentations, drawn once per clip and applied to every frame
                and mask (the first one should resize to the model's square input size).
            image_format: PIL mode or "BGR" for the frames (cfg.INPUT.FORMAT, "RGB" for AQFormer).
            num_frames: T, the frames per clip (cfg.MODEL.AQFORMER.NUM_FRAMES).
            audio_source: "logmel" (precomputed .pkl) or "wav" (cfg.INPUT.AUDIO.SOURCE).
            zero_audio: replace the audio examples by zeros (audio-blind control experiment,
                cfg.INPUT.AUDIO.ZERO_INPUT); the audio files are still read and checked.
            negative_audio: training with negatives (cfg.INPUT.NEGATIVE_AUDIO): the sampler draws, from the
                global NumPy generator AFTER the geometric augmentation (so the stream position's seed fixes
                it), whether this clip's audio becomes a negative; None: never. Independently of it, a
                dataset dict with a ``"negative_audio"`` spec (evaluation conditions) always gets that
                negative. A negative clip's masks are all empty on the frames the clip has labelled
                (``"mask_valid"`` unchanged: the empty mask is the supervision) and the clip dict carries
                the spec as ``"negative_audio"``.
        """
        if audio_source not in ("logmel", "wav"):
            raise ValueError(f"audio_source must be 'logmel' or 'wav', got {audio_source!r}.")
        self.is_train = is_train
        self.augmentations = T.AugmentationList(list(augmentations))
        self.image_format = image_format
        self.num_frames = int(num_frames)
        self.audio_source = audio_source
        self.zero_audio = bool(zero_audio)
        self.negative_audio = negative_audio
        if negative_audio is not None:
            logger.info("[AVSClipMapper] training with negative audio: %s", negative_audio)
        if self.zero_audio:
            logger.warning("[AVSClipMapper] INPUT.AUDIO.ZERO_INPUT: every clip's audio is replaced by zeros")
        mode = "training" if is_train else "inference"
        logger.info("[AVSClipMapper] augmentations used in %s: %s", mode, self.augmentations)

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        return {
            "is_train": is_train,
            "augmentations": build_avs_augmentations(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
            "num_frames": cfg.MODEL.AQFORMER.NUM_FRAMES,
            "audio_source": cfg.INPUT.AUDIO.SOURCE,
            "zero_audio": cfg.INPUT.AUDIO.ZERO_INPUT,
            "negative_audio": NegativeAudioSampler.from_config(cfg) if is_train else None,
        }

    def _negative_spec(self, d: dict) -> Optional[dict]:
        """The clip's negative-audio spec: the dataset dict's ``"negative_audio"``, else (training with
        negatives) a draw of the sampler, else None."""
        if "negative_audio" in d:
            if "pathway_audio_files" in d:
                raise ValueError(f"Video {d.get('video_id')!r}: a negative-audio clip cannot also swap pathway audio.")
            return check_negative_spec(d["negative_audio"])
        if self.negative_audio is None:
            return None
        # One number from the global generator (seeded per stream position by SeededClipDataset) seeds the draw.
        return self.negative_audio.draw(np.random.default_rng(int(np.random.randint(0, 2**31 - 1))))

    @staticmethod
    def _pathway_negative_specs(d: dict) -> dict:
        """Pathway -> negative spec from the dataset dict's ``"pathway_negative_audio"`` (evaluation of
        negatives by pathway, :func:`aqformer_d2.data.datasets.register_pathway_negative_audio`); {} without it.
        The other pathways hear ``"audio"``: the clip's ``"negative_audio"`` if it has one, else its own sound
        (then its masks are its own, as for a pathway swap)."""
        specs = d.get("pathway_negative_audio")
        if specs is None:
            return {}
        video = d.get("video_id")
        if "pathway_audio_files" in d:
            raise ValueError(f"Video {video!r}: 'pathway_negative_audio' and 'pathway_audio_files' both replace "
                             f"pathway audio; a clip may carry one of them.")
        unknown = sorted(set(specs) - set(AUDIO_PATHWAYS))
        if unknown or not specs:
            raise ValueError(f"Video {video!r}: 'pathway_negative_audio' names pathways {sorted(specs)}; "
                             f"it must name one or more of {AUDIO_PATHWAYS}.")
        return {p: check_negative_spec(specs[p]) for p in AUDIO_PATHWAYS if p in specs}

    def __call__(self, dataset_dict: dict) -> dict:
        d = copy.deepcopy(dataset_dict)
        frame_files: List[str] = d["frame_files"]
        mask_files: List[Optional[str]] = d.get("mask_files") or [None] * len(frame_files)
        if len(frame_files) != self.num_frames or len(mask_files) != self.num_frames:
            raise ValueError(
                f"Video {d.get('video_id')!r} has {len(frame_files)} frames / {len(mask_files)} mask entries; "
                f"the mapper expects T = {self.num_frames} (cfg.MODEL.AQFORMER.NUM_FRAMES)."
            )
        height, width = int(d["height"]), int(d["width"])

        frames = [read_frame(p, self.image_format) for p in frame_files]  # T x [H0, W0, 3]
        check_frame_sizes(d.get("video_id"), frame_files, [f.shape[:2] for f in frames], (height, width))
        masks: List[Optional[np.ndarray]] = []
        for p in mask_files:
            if p is None:
                masks.append(None)
                continue
            m = read_avs_mask(p)  # [H0, W0] uint8 {0, 1}
            if m.shape != (height, width):
                raise ValueError(
                    f"Mask {p} is {m.shape[0]}x{m.shape[1]} (HxW), but its frames are {height}x{width}."
                )
            masks.append(m)

        frames, transforms = augment_clip(self.augmentations, frames)  # T x [H, W, 3]
        out_h, out_w = frames[0].shape[:2]
        images = torch.stack(
            [torch.as_tensor(np.ascontiguousarray(f.transpose(2, 0, 1))) for f in frames]
        )  # [T, 3, H, W] uint8

        audio = load_audio_examples(d, self.audio_source, self.num_frames)  # [T, 1, 96, 64]
        negative = self._negative_spec(d)
        pathway_negatives = self._pathway_negative_specs(d)  # pathway -> spec ({} for most clips)
        if negative is not None:
            audio = negative_examples(d, negative, self.num_frames)  # [T, 1, 96, 64]
        if self.zero_audio:
            audio = torch.zeros_like(audio)
        # Audio-pathway attribution (audio_controls.swap_audio with pathways): pathway -> [T, 1, 96, 64].
        pathway_audio = {}
        for pathway, files in d.get("pathway_audio_files", {}).items():
            examples = load_audio_examples(files, self.audio_source, self.num_frames)
            pathway_audio[pathway] = torch.zeros_like(examples) if self.zero_audio else examples
        # Negatives by pathway: pathway -> [T, 1, 96, 64] of that pathway's negative ("audio" holds the others').
        for pathway, spec in pathway_negatives.items():
            examples = negative_examples(d, spec, self.num_frames)
            pathway_audio[pathway] = torch.zeros_like(examples) if self.zero_audio else examples
        out = {
            "images": images,
            "audio": audio,
            "height": height,
            "width": width,
            "video_id": d["video_id"],
            "frame_files": frame_files,
            "mask_files": mask_files,
        }
        if pathway_audio:
            out["pathway_audio"] = pathway_audio
        if negative is not None:
            out["negative_audio"] = dict(negative)
        if any(m is not None for m in masks):
            mask_t = torch.zeros((self.num_frames, out_h, out_w), dtype=torch.uint8)  # [T, H, W]
            valid = torch.zeros(self.num_frames, dtype=torch.bool)  # [T]
            for t, m in enumerate(masks):
                if m is None:
                    continue
                valid[t] = True
                if negative is not None:  # nothing on screen makes the sound: the mask stays empty
                    continue
                m = transforms.apply_segmentation(m)  # [H, W], nearest-neighbour resize
                mask_t[t] = torch.as_tensor(np.ascontiguousarray(m) > 0, dtype=torch.uint8)
            out["masks"] = mask_t
            out["mask_valid"] = valid
        return out
