"""The audio-queried transformer decoder of AQFormer (paper §3.3, eq. 3-6).

The per-layer equations live in :mod:`.layers`; this module holds the query initialisation
(A^0, "original audio queries"), the key preparation (positional + level embeddings) and the
round-robin schedule over the 3 decoder scales.
"""
from typing import Dict, List, Optional, Tuple

import torch
from detectron2.config import configurable
from torch import nn

from ..layers import PositionEmbeddingSine
from .build import AQ_TRANSFORMER_DECODER_REGISTRY
from .layers import CROSS_ATTN_SCOPES, AQDecoderLayer, MaskEmbed, predict_masks_of_layers

__all__ = ["AudioQueriedTransformerDecoder", "QUERY_TYPES", "NUM_DECODER_SCALES"]

# "audio": A^0 = Linear(A) (the paper); "vanilla": T learned queries, audio unused (Table 2a).
QUERY_TYPES = ("audio", "vanilla")
# The decoder visits the 3 smaller pixel-decoder scales (strides 32, 16, 8), lowest resolution first.
NUM_DECODER_SCALES = 3


@AQ_TRANSFORMER_DECODER_REGISTRY.register()
class AudioQueriedTransformerDecoder(nn.Module):
    """T per-frame queries refined by L = 3N layers over the 3 smaller scales, then eq. (6) masks.

    Layer l (1-based) attends to scale ``(l - 1) % 3`` of ``multi_scale_features`` (lowest resolution
    first, round-robin over N stages). After every layer the queries A^l produce mask logits with eq. (6).
    """

    @configurable
    def __init__(
        self,
        *,
        hidden_dim: int,
        audio_dim: int,
        num_frames: int,
        num_stages: int,
        nheads: int,
        dim_feedforward: int,
        dropout: float = 0.0,
        query_type: str = "audio",
        cross_attn_scope: str = "all",
        mask_embed: str = "plain",
    ):
        """
        Args:
            hidden_dim: C_f, channels of the pixel-decoder features and of the queries.
            audio_dim: C_a, channels of the audio feature A.
            num_frames: T, frames per clip; fixes the number of learned queries when query_type is
                "vanilla" (with "audio" queries any T is accepted).
            num_stages: N >= 1 decoder stages; the decoder has 3N layers.
            nheads: attention heads of the cross- and self-attention.
            dim_feedforward: hidden width of the FFN of eq. (5).
            dropout: dropout of the attention and FFN blocks.
            query_type: "audio" (A^0 = Linear(C_a -> C_f)(A), the paper) or "vanilla" (T learned queries;
                the audio is not used, Table 2a).
            cross_attn_scope: "all" (each query attends to all T frames, the paper) or "own" (only its
                own frame, Table 2a "Audio Query†").
            mask_embed: "plain" (eq. 6 as printed: M̂^4 times A^l) or "norm_mlp" (M̂^4 times MLP(LN(A^l)),
                Mask2Former's practice); see :class:`MaskEmbed`.
        """
        super().__init__()
        if query_type not in QUERY_TYPES:
            raise ValueError(
                f"AudioQueriedTransformerDecoder: QUERY_TYPE must be one of {QUERY_TYPES}, got {query_type!r}"
            )
        if cross_attn_scope not in CROSS_ATTN_SCOPES:
            raise ValueError(
                f"AudioQueriedTransformerDecoder: CROSS_ATTN_SCOPE must be one of {CROSS_ATTN_SCOPES}, "
                f"got {cross_attn_scope!r}"
            )
        if num_stages < 1:
            raise ValueError(f"AudioQueriedTransformerDecoder: DEC_STAGES must be >= 1, got {num_stages}")
        if num_frames < 1:
            raise ValueError(f"AudioQueriedTransformerDecoder: NUM_FRAMES must be >= 1, got {num_frames}")
        if hidden_dim < 2 or hidden_dim % 2 != 0:
            raise ValueError(
                f"AudioQueriedTransformerDecoder: hidden_dim (CONVS_DIM) must be even for the sine "
                f"positional embedding, got {hidden_dim}"
            )
        if nheads < 1 or hidden_dim % nheads != 0:
            raise ValueError(
                f"AudioQueriedTransformerDecoder: hidden_dim ({hidden_dim}) must be a multiple of NHEADS ({nheads})"
            )
        if dim_feedforward < 1:
            raise ValueError(f"AudioQueriedTransformerDecoder: DIM_FEEDFORWARD must be >= 1, got {dim_feedforward}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"AudioQueriedTransformerDecoder: DROPOUT must be in [0, 1), got {dropout}")

        self.hidden_dim = hidden_dim
        self.audio_dim = audio_dim
        self.num_frames = num_frames
        self.num_stages = num_stages
        self.query_type = query_type
        self.cross_attn_scope = cross_attn_scope
        self.num_layers = NUM_DECODER_SCALES * num_stages

        if query_type == "audio":
            if audio_dim < 1:
                raise ValueError(f"AudioQueriedTransformerDecoder: audio_dim must be >= 1, got {audio_dim}")
            self.audio_query_proj = nn.Linear(audio_dim, hidden_dim)
        else:
            self.query_embed = nn.Embedding(num_frames, hidden_dim)
        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2, normalize=True)
        self.level_embed = nn.Embedding(NUM_DECODER_SCALES, hidden_dim)
        self.layers = nn.ModuleList(
            AQDecoderLayer(hidden_dim, nheads, dim_feedforward, dropout=dropout, scope=cross_attn_scope)
            for _ in range(self.num_layers)
        )
        self.mask_embed = MaskEmbed(hidden_dim, mask_embed)

    @classmethod
    def from_config(cls, cfg):
        dec = cfg.MODEL.AQ_TRANSFORMER_DECODER
        return {
            "hidden_dim": cfg.MODEL.AQ_PIXEL_DECODER.CONVS_DIM,
            "audio_dim": cfg.MODEL.AUDIO_ENCODER.OUT_DIM,
            "num_frames": cfg.MODEL.AQFORMER.NUM_FRAMES,
            "num_stages": dec.DEC_STAGES,
            "nheads": dec.NHEADS,
            "dim_feedforward": dec.DIM_FEEDFORWARD,
            "dropout": dec.DROPOUT,
            "query_type": dec.QUERY_TYPE,
            "cross_attn_scope": dec.CROSS_ATTN_SCOPE,
            "mask_embed": dec.MASK_EMBED,
        }

    # ------------------------------------------------------------------ input checks
    def _clip_shape(self, multi_scale_features: List[torch.Tensor], audio: Optional[torch.Tensor]) -> Tuple[int, int]:
        """Validate the inputs' ranks/channels and return (B, T)."""
        is_list = isinstance(multi_scale_features, (list, tuple))
        if not is_list or len(multi_scale_features) != NUM_DECODER_SCALES:
            got = len(multi_scale_features) if is_list else type(multi_scale_features)
            raise ValueError(
                f"AudioQueriedTransformerDecoder: multi_scale_features must be a list of {NUM_DECODER_SCALES} "
                f"tensors (lowest resolution first), got {got}"
            )
        frames_total = multi_scale_features[0].shape[0] if multi_scale_features[0].dim() == 4 else -1
        if audio is not None:
            if audio.dim() != 3:
                raise ValueError(f"AudioQueriedTransformerDecoder: audio must be [B, T, C_a], got {tuple(audio.shape)}")
            batch, frames = audio.shape[:2]
            if self.query_type == "audio" and audio.shape[2] != self.audio_dim:
                raise ValueError(
                    f"AudioQueriedTransformerDecoder: audio has {audio.shape[2]} channels, "
                    f"expected C_a={self.audio_dim}"
                )
        elif self.query_type == "audio":
            raise ValueError("AudioQueriedTransformerDecoder: audio [B, T, C_a] is required with QUERY_TYPE 'audio'")
        else:
            if frames_total < 0 or frames_total % self.num_frames != 0:
                raise ValueError(
                    f"AudioQueriedTransformerDecoder: cannot split {frames_total} frames into clips of "
                    f"T={self.num_frames}"
                )
            batch, frames = frames_total // self.num_frames, self.num_frames
        if self.query_type == "vanilla" and frames != self.num_frames:
            raise ValueError(
                f"AudioQueriedTransformerDecoder: 'vanilla' queries were built for T={self.num_frames} frames, "
                f"got clips of {frames}"
            )
        return batch, frames

    def _check_features(self, features: List[torch.Tensor], frames_total: int, what: str) -> None:
        previous_pixels = 0
        for i, feat in enumerate(features):
            if feat.dim() != 4 or feat.shape[0] != frames_total or feat.shape[1] != self.hidden_dim:
                raise ValueError(
                    f"AudioQueriedTransformerDecoder: {what}[{i}] must be [B*T={frames_total}, C_f={self.hidden_dim}, "
                    f"H, W], got {tuple(feat.shape)}"
                )
            pixels = feat.shape[-2] * feat.shape[-1]
            if what == "multi_scale_features" and pixels < previous_pixels:
                raise ValueError(
                    "AudioQueriedTransformerDecoder: multi_scale_features must be ordered lowest resolution first, "
                    f"got sizes {[tuple(f.shape[-2:]) for f in features]}"
                )
            previous_pixels = pixels

    # ------------------------------------------------------------------ building blocks
    def initial_queries(self, audio: Optional[torch.Tensor], batch: int) -> torch.Tensor:
        """A^0, [B, T, C_f]: "original audio queries" A^0 = Linear(C_a -> C_f)(A) with audio [B, T, C_a]
        (§3.3), or the T learned queries repeated over the B clips for QUERY_TYPE "vanilla" (audio ignored)."""
        if self.query_type == "audio":
            return self.audio_query_proj(audio)  # [B, T, C_a] -> [B, T, C_f]
        return self.query_embed.weight.unsqueeze(0).expand(batch, -1, -1)  # [T, C_f] -> [B, T, C_f]

    def _flatten_scale(self, feat: torch.Tensor, level: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """feat [B*T, C, H, W] -> memory [B*T, H*W, C] (features + learned level embedding, as Mask2Former
        adds it to the memory) and key positional embedding [1, H*W, C] (2-D sine; identical for every frame).

        The level embedding goes into the memory, i.e. into keys AND values: added to the keys alone it
        would shift every logit of a layer by the same amount (each layer attends to one scale) and the
        softmax would cancel it, leaving a parameter that never learns."""
        memory = feat.flatten(2).transpose(1, 2)  # [B*T, C, H, W] -> [B*T, HW, C]
        memory = memory + self.level_embed.weight[level][None, None, :]
        pos = self.pe_layer(feat[:1]).flatten(2).transpose(1, 2)  # [1, C, H, W] -> [1, HW, C]
        return memory, pos

    def run_layers(self, queries: torch.Tensor, memories: List[Tuple[torch.Tensor, torch.Tensor]],
                   multi_scale_features: List[torch.Tensor], queries_per_frame: int = 1):
        """Eq. (3)-(5) through the L layers, round-robin over the scales (lowest resolution first).

        Args:
            queries: A^0, [B, T*N, C_f] (N = queries_per_frame; N = 1 in the paper).
            memories: per scale, :meth:`_flatten_scale`'s (memory [B*T, HW, C], key position [1, HW, C]).
            multi_scale_features: the 3 scales [B*T, C_f, H_l, W_l] the memories come from.
            queries_per_frame: N.

        Returns:
            (L tensors A^1..A^L [B, T*N, C_f], L tensors M̂^l [B*T, C_f, H_l, W_l]: the scale layer l attended to).
        """
        all_queries, layer_features = [], []
        for index, layer in enumerate(self.layers):
            level = index % NUM_DECODER_SCALES  # round-robin, lowest resolution first
            values, key_pos = memories[level]
            queries = layer(queries, values, key_pos, queries_per_frame)  # A^{l-1} -> A^l, [B, T*N, C_f]
            all_queries.append(queries)
            layer_features.append(multi_scale_features[level])
        return all_queries, layer_features

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        multi_scale_features: List[torch.Tensor],
        mask_features: torch.Tensor,
        audio: Optional[torch.Tensor] = None,
    ) -> Dict[str, object]:
        """
        Args:
            multi_scale_features: 3 tensors [B*T, C_f, H_l, W_l], lowest resolution (stride 32) first.
            mask_features: M̂^4, [B*T, C_f, H4, W4].
            audio: A, [B, T, C_a]. Required for QUERY_TYPE "audio"; with "vanilla" it is only used for
                its shape (optional) and its values never reach the output.

        Returns:
            dict with "pred_masks" [B, T, H4, W4] (logits of the last layer), "aux_outputs" (layers
            1..L-1, each {"pred_masks": [B, T, H4, W4]}), "queries" (L tensors [B, T, C_f]: A^1..A^L)
            and "layer_features" (L tensors [B*T, C_f, H_l, W_l], the M̂^l layer l attended to).
        """
        batch, frames = self._clip_shape(multi_scale_features, audio)
        self._check_features(list(multi_scale_features), batch * frames, "multi_scale_features")
        self._check_features([mask_features], batch * frames, "mask_features")

        memories = [self._flatten_scale(feat, level) for level, feat in enumerate(multi_scale_features)]
        queries = self.initial_queries(audio, batch)  # A^0, [B, T, C_f]
        all_queries, layer_features = self.run_layers(queries, memories, multi_scale_features)
        # eq. (6) for every layer in one product (the masks are outputs only: no layer attends with them)
        embedded = torch.stack([self.mask_embed(q) for q in all_queries])  # [L, B, T, C_f]
        all_masks = predict_masks_of_layers(mask_features, embedded)  # [L, B, T, H4, W4]
        return {
            "pred_masks": all_masks[-1],
            "aux_outputs": [{"pred_masks": m} for m in all_masks[:-1]],
            "queries": all_queries,
            "layer_features": layer_features,
        }
