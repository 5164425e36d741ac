"""Audio I/O and the VGGish log-mel front end. Imports neither ``aqformer_d2.modeling`` nor ``aqformer_d2.data``."""
from .io import read_wav, resample, to_mono
from .logmel import VGGishLogMel, log_mel_spectrogram, vggish_mel_matrix, wav_file_to_examples, waveform_to_examples

__all__ = [
    "read_wav",
    "resample",
    "to_mono",
    "VGGishLogMel",
    "log_mel_spectrogram",
    "vggish_mel_matrix",
    "wav_file_to_examples",
    "waveform_to_examples",
]
