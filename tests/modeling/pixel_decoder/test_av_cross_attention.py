"""Eq. (1)-(2): audio-visual cross-attention."""
import pytest
import torch

from aqformer_d2.modeling.pixel_decoder.av_cross_attention import AudioVisualCrossAttention

B, T, CV, CA, CM, CF, H, W = 2, 2, 6, 5, 4, 8, 3, 4
# float64: eq. (1)-(2) are recomputed below outside the module (another summation order over at most
# CV = 6 channels, and a GroupNorm). Two evaluation orders of an n-term sum differ by at most
# 2(n-1)u * sum|terms| (Higham, Accuracy and Stability of Numerical Algorithms, section 4.2): with
# u = 2**-53 = 1.1e-16 that is ~1e-15 relative on any CPU and thread count, far below the atol of
# 1e-6 / 1e-5 used here.
DTYPE = torch.float64


def _inputs():
    g = torch.Generator().manual_seed(0)
    return torch.randn(B * T, CV, H, W, generator=g, dtype=DTYPE), torch.randn(B, T, CA, generator=g, dtype=DTYPE)


def _module(mode, norm=""):
    torch.manual_seed(0)
    return AudioVisualCrossAttention(CV, CA, CM, CF, mode=mode, norm=norm).to(DTYPE)


def test_printed_mode_weights_are_exactly_one_and_output_is_fv_plus_fw():
    attn = _module("printed")
    visual, audio = _inputs()
    v_bar, weights = attn.attend(visual, audio)
    assert weights.shape == (B * T, H * W, 1)
    assert torch.equal(weights, torch.ones_like(weights))
    out = attn(visual, audio)
    expected = attn.f_v(audio.reshape(B * T, CA))[:, :, None, None] + attn.f_w(visual)  # [B*T, C_f, H, W]
    assert out.shape == (B * T, CF, H, W)
    assert torch.allclose(out, expected, atol=1e-6)


def test_sigmoid_mode_differs_and_gates_per_pixel():
    printed, gated = _module("printed"), _module("sigmoid")
    gated.load_state_dict(printed.state_dict())
    visual, audio = _inputs()
    _, weights = gated.attend(visual, audio)
    assert torch.all((weights > 0) & (weights < 1))
    assert weights.std() > 0  # depends on the pixel
    assert not torch.allclose(gated(visual, audio), printed(visual, audio))


def test_frames_use_their_own_audio_clip_major():
    attn = _module("printed")
    visual, audio = _inputs()
    out = attn(visual, audio)
    audio2 = audio.clone()
    audio2[1, 0] += 1.0  # clip 1, frame 0 -> flattened frame index 1*T + 0
    changed = (attn(visual, audio2) - out).abs().flatten(1).amax(1) > 0
    assert changed.tolist() == [False, False, True, False]


def test_norm_acts_on_visual_branch_only():
    torch.manual_seed(0)
    attn = AudioVisualCrossAttention(CV, CA, CM, 32, mode="printed", norm="GN").to(DTYPE)  # GN: 32 groups
    visual, audio = _inputs()
    out = attn(visual, audio)
    assert out.shape == (B * T, 32, H, W)
    # The audio term is added after the norm, so it survives unchanged as the per-frame offset.
    assert torch.allclose(out - attn.f_w(visual), attn.f_v(audio.reshape(B * T, CA))[:, :, None, None], atol=1e-5)


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="mode"):
        AudioVisualCrossAttention(CV, CA, CM, CF, mode="softmax")
    attn = _module("sigmoid")
    visual, audio = _inputs()
    with pytest.raises(ValueError, match="B\\*T"):
        attn(visual, audio[:, :1])
    with pytest.raises(ValueError, match="audio"):
        attn(visual, audio[..., :2])
