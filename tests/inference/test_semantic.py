"""The AVSS model through the inference package: SemanticClipModule equals AQFormerSemantic.forward, the
TorchSegmenter returns class scores, predict_video turns them into labels at the frame size, muted() feeds
the log-mel of silence, and the ONNX export / backend refuse the semantic head before writing anything."""
import os

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model

from aqformer_d2.audio.logmel import waveform_to_examples
from aqformer_d2.inference import (
    ClassScores,
    ClipSegmentationModule,
    SemanticClipModule,
    SoundProbabilities,
    TorchSegmenter,
    build_segmenter,
    clip_audio,
    clip_frames,
    clip_module_class,
    export_clip_onnx,
    load_frame_files,
    muted,
    predict_video,
)
from aqformer_d2.modeling import AQFormer, AQFormerSemantic

from ..modeling.meta_arch.helpers import make_cfg
from .test_video import MeanSegmenter, _frames_and_wav

AVSS_CONFIG = "configs/synthavs/aqformer_tiny_avss.yaml"
K = 9


@pytest.fixture(scope="module")
def avss_model():
    torch.manual_seed(0)
    return build_model(make_cfg(AVSS_CONFIG, ["MODEL.AQFORMER.NUM_FRAMES", 2])).eval()


def test_clip_module_lookup_follows_the_class_hierarchy():
    class MySemantic(AQFormerSemantic):
        pass

    assert clip_module_class(AQFormer) is ClipSegmentationModule
    assert clip_module_class(AQFormerSemantic) is SemanticClipModule
    assert clip_module_class(MySemantic) is SemanticClipModule  # a subclass gets its parent's head
    with pytest.raises(ValueError, match="Module: no clip inference head for this meta-architecture"):
        clip_module_class(torch.nn.Module)


@pytest.mark.parametrize("size", [64, 72])  # 72: not a multiple of 32, padded like ImageList
def test_semantic_module_equals_model_forward(avss_model, size):
    """Same pieces, same order as AQFormerSemantic.forward + inference at the input size: bitwise equal."""
    g = torch.Generator().manual_seed(size)
    frames = torch.randint(0, 256, (2, 3, size, size), generator=g, dtype=torch.uint8)
    audio = torch.randn(2, 1, 96, 64, generator=g)
    module = SemanticClipModule(avss_model, 2, size, size)
    with torch.no_grad():
        ours = module(frames, audio)  # [T, K, H, W]
        ref = avss_model([{"images": frames, "audio": audio}])[0]["sem_seg"]  # [T, K, H, W]
    assert tuple(ours.shape) == (2, K, size, size)
    assert torch.equal(ours, ref)
    assert isinstance(module.clip_output(), ClassScores) and module.clip_output().num_classes == K


def test_torch_segmenter_and_predict_video_give_labels(avss_model, tmp_path):
    """Class scores [T, K, S, S] -> labels [n, height, width] = argmax of the scores resized to the frame size."""
    segmenter = TorchSegmenter(model=avss_model, height=64, width=64, input_format="RGB")
    assert isinstance(segmenter.output, ClassScores)
    files, wav = _frames_and_wav(str(tmp_path / "frames"))  # 7 frames of 40x30, 7 s of a tone
    video = load_frame_files(files[:3], wav, segmenter)
    preds = list(predict_video(segmenter, video))
    assert [p.plan.seconds for p in preds] == [[0, 1], [2]]
    for p in preds:
        assert p.probs is None and p.labels.dtype == np.uint8
        assert p.labels.shape == (len(p.plan.seconds), 30, 40) and p.labels.max() < K
    # the labels are the argmax of the scores resized bilinearly (checked for the first clip)
    scores = segmenter(clip_frames(video.frames, preds[0].plan), clip_audio(video.waveform, 16000, preds[0].plan)[0])
    resized = torch.nn.functional.interpolate(torch.from_numpy(scores), size=(30, 40), mode="bilinear",
                                              align_corners=False)  # [2, K, 30, 40]
    np.testing.assert_array_equal(preds[0].labels, resized.argmax(1).numpy())


def test_sound_probabilities_labels_and_sounding_flag(tmp_path):
    """S4 / MS3 outputs: labels = probs > threshold; a frame with no pixel above it is not sounding."""
    files, wav = _frames_and_wav(str(tmp_path / "frames"))  # grey levels 10..250: probs = grey / 255
    segmenter = MeanSegmenter()
    assert isinstance(segmenter.output, SoundProbabilities)
    video = load_frame_files(files, wav, segmenter)
    preds = list(predict_video(segmenter, video, mask_threshold=0.5))
    sounding = np.concatenate([p.sounding() for p in preds])
    np.testing.assert_array_equal(sounding, np.array([10, 50, 90, 130, 170, 210, 250]) / 255 > 0.5)
    for p in preds:
        np.testing.assert_array_equal(p.labels, (p.probs > 0.5).astype(np.uint8))


def test_muted_feeds_the_log_mel_of_silence(tmp_path):
    files, wav = _frames_and_wav(str(tmp_path / "frames"))
    segmenter = MeanSegmenter()
    video = load_frame_files(files, wav, segmenter)
    quiet = muted(video)
    assert quiet.audio_muted and not video.audio_muted
    assert quiet.waveform.shape == video.waveform.shape and not quiet.waveform.any()
    list(predict_video(segmenter, quiet))
    silence = waveform_to_examples(np.zeros(5 * 16000), 16000)[:5]  # [5, 1, 96, 64]
    # log(0 + 0.01) in every bin; float32 rounding of that constant is < 1e-6
    assert torch.allclose(silence, torch.full_like(silence, float(np.log(0.01))), rtol=0, atol=1e-6)
    for _, audio in segmenter.clips:
        assert torch.equal(audio, silence)


def test_onnx_refuses_the_semantic_head(avss_model, tmp_path):
    path = str(tmp_path / "avss.onnx")
    with pytest.raises(ValueError, match=r"avss.onnx: ONNX export of AQFormerSemantic \(the AVSS semantic head"):
        export_clip_onnx(avss_model, path, num_frames=2, height=64, width=64, input_format="RGB")
    assert not os.path.exists(path)
    cfg = make_cfg(AVSS_CONFIG)
    with pytest.raises(ValueError, match="AQFormerSemantic .* has no ONNX export; the 'onnxruntime' backend runs S4"):
        build_segmenter(cfg, "onnxruntime", path)
