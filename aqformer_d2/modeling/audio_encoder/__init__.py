"""Audio encoders (§3.1): registry, builder and VGGish (registered on import)."""
from .build import AUDIO_ENCODER_REGISTRY, build_audio_encoder
from .vggish import VGGish, VGGishPCA, convert_torchvggish_state_dict, load_torch_file, vggish_state_dict_shapes

__all__ = [
    "AUDIO_ENCODER_REGISTRY",
    "build_audio_encoder",
    "VGGish",
    "VGGishPCA",
    "convert_torchvggish_state_dict",
    "load_torch_file",
    "vggish_state_dict_shapes",
]
