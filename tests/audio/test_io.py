"""aqformer_d2.audio.io: reading WAV files, downmix, resampling."""
import ast
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import aqformer_d2.audio
from aqformer_d2.audio.io import read_wav, resample, to_mono

AUDIO_DIR = Path(aqformer_d2.audio.__file__).parent


def test_read_wav_mono_and_stereo_int16(tmp_path):
    rng = np.random.default_rng(0)
    pcm = rng.integers(-32768, 32767, size=(800, 2), dtype=np.int16)  # [S, C]
    stereo = tmp_path / "stereo.wav"
    mono = tmp_path / "mono.wav"
    sf.write(stereo, pcm, 22050, subtype="PCM_16")
    sf.write(mono, pcm[:, 0], 16000, subtype="PCM_16")

    wav, sr = read_wav(stereo)
    assert sr == 22050 and wav.dtype == np.float32 and wav.shape == (2, 800)  # channels first
    np.testing.assert_array_equal(wav, pcm.T.astype(np.float32) / 32768.0)

    wav, sr = read_wav(mono)
    assert sr == 16000 and wav.shape == (800,)
    np.testing.assert_array_equal(wav, pcm[:, 0].astype(np.float32) / 32768.0)


def test_read_wav_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.wav"
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        read_wav(missing)

    zero_bytes = tmp_path / "zero_bytes.wav"
    zero_bytes.write_bytes(b"")
    with pytest.raises(ValueError, match="zero_bytes.wav"):
        read_wav(zero_bytes)

    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF not really a wave file" * 10)
    with pytest.raises(ValueError, match="garbage.wav.*cannot read"):
        read_wav(garbage)

    no_frames = tmp_path / "no_frames.wav"
    sf.write(no_frames, np.zeros((0, 1), dtype=np.int16), 16000, subtype="PCM_16")
    with pytest.raises(ValueError, match="no_frames.wav.*no samples"):
        read_wav(no_frames)


def test_to_mono():
    x = np.array([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]], dtype=np.float32)  # [C=2, S=3]
    np.testing.assert_allclose(to_mono(x), [2.0, 3.0, 4.0])
    assert to_mono(x).dtype == np.float32
    assert torch.equal(to_mono(torch.from_numpy(x)), torch.tensor([2.0, 3.0, 4.0]))
    row = x[0]  # [S]
    assert to_mono(row) is row
    with pytest.raises(ValueError, match="shape"):
        to_mono(np.zeros((1, 2, 3)))


def test_resample_keeps_a_tone_and_the_type():
    sr_in, sr_out, f = 48000, 16000, 1000.0
    t_in = np.arange(sr_in // 2) / sr_in  # 0.5 s
    x = np.sin(2 * np.pi * f * t_in).astype(np.float32)
    y = resample(x, sr_in, sr_out)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32 and y.shape == (sr_out // 2,)
    t_out = np.arange(sr_out // 2) / sr_out
    expected = np.sin(2 * np.pi * f * t_out)
    # Away from the zero-padded edges the band-limited tone is reproduced closely.
    np.testing.assert_allclose(y[200:-200], expected[200:-200], atol=1e-3)

    yt = resample(torch.from_numpy(x)[None], sr_in, sr_out)  # [1, S]
    assert isinstance(yt, torch.Tensor) and yt.shape == (1, sr_out // 2)
    assert resample(x, 16000, 16000) is x
    with pytest.raises(ValueError, match="orig_sr"):
        resample(x, 0, 16000)


def test_audio_package_does_not_import_modeling_or_data():
    """The audio package sits below modeling/ and data/: none of its modules imports them."""
    files = sorted(AUDIO_DIR.glob("*.py"))
    assert {f.name for f in files} >= {"__init__.py", "io.py", "logmel.py"}
    for f in files:
        for node in ast.walk(ast.parse(f.read_text(), filename=str(f))):
            if isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                assert not name.startswith(("aqformer_d2.modeling", "aqformer_d2.data", "..modeling", "..data")), (
                    f"{f.name} imports {name}"
                )
