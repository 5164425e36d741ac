"""Audio-queried transformer decoder (paper §3.3). Importing this package registers
``AudioQueriedTransformerDecoder`` and ``AudioQueriedSemanticDecoder`` (AVSS) in ``AQ_TRANSFORMER_DECODER_REGISTRY``."""
from .aq_transformer_decoder import QUERY_TYPES, AudioQueriedTransformerDecoder
from .build import AQ_TRANSFORMER_DECODER_REGISTRY, build_aq_transformer_decoder
from .semantic_decoder import QUERY_CONDITIONINGS, AudioQueriedSemanticDecoder
from .layers import CROSS_ATTN_SCOPES, AQDecoderLayer, CrossAttentionLayer, SelfAttentionLayer, predict_masks

__all__ = [
    "AQ_TRANSFORMER_DECODER_REGISTRY",
    "build_aq_transformer_decoder",
    "AudioQueriedTransformerDecoder",
    "AudioQueriedSemanticDecoder",
    "QUERY_CONDITIONINGS",
    "QUERY_TYPES",
    "CROSS_ATTN_SCOPES",
    "AQDecoderLayer",
    "CrossAttentionLayer",
    "SelfAttentionLayer",
    "predict_masks",
]
