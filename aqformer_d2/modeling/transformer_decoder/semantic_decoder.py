"""The audio-queried transformer decoder for AVSBench-semantic (AVSS): N audio-conditioned queries per frame.

Beyond the paper (docs/paper_choices.md, "Beyond the paper: AVSS"). AQFormer's decoder (§3.3) has one query per
frame, A^0_t = Linear(A_t). A semantic task needs several objects of different classes per frame, so every
frame t gets N queries, each conditioned on A_t (:data:`QUERY_CONDITIONINGS`), and each query also predicts a
(K+1)-way class (K classes, background among them, plus "no object"), as the query-based AVSS models do
(COMBO-AVS, VCT: Mask2Former's mask classification). The rest is AQFormer's decoder unchanged: the layers of
eq. (3)-(5) (:class:`~.layers.AQDecoderLayer`, every query attends to all T frames' features and, in eq. (4),
to all T*N queries of its clip), the round-robin over the 3 scales, and eq. (6) masks per query on its own
frame's M̂^4_t.

Shapes: B clips, T frames, N queries per frame, K classes, C = C_f, L = 3 * DEC_STAGES layers.
"""
from typing import Dict, List, Optional

import torch
from detectron2.config import configurable
from torch import nn

from .aq_transformer_decoder import AudioQueriedTransformerDecoder
from .build import AQ_TRANSFORMER_DECODER_REGISTRY
from .layers import predict_masks_of_layers

__all__ = ["AudioQueriedSemanticDecoder", "QUERY_CONDITIONINGS"]

# How the N queries of frame t are built from A_t, [C_a] (E: N learned embeddings [N, C_f]):
# "add":        Q_{t,n} = E_n + W A_t + b           (COMBO-AVS's "add"; the paper's Linear(A_t) plus a query identity)
# "audio_only": Q_{t,n} = W_n A_t + b_n             (N separate projections of A_t; no audio-free parameter)
# "vanilla":    Q_{t,n} = E_n                       (no audio: the analogue of Table 2a's "Vanilla Object Query")
# A concatenation [E_n ; A_t] followed by one linear map equals "add" up to re-parametrisation (W_e E_n is
# itself a learned embedding), so it is not offered separately.
QUERY_CONDITIONINGS = ("add", "audio_only", "vanilla")


@AQ_TRANSFORMER_DECODER_REGISTRY.register()
class AudioQueriedSemanticDecoder(AudioQueriedTransformerDecoder):
    """N audio-conditioned queries per frame with a class head; see the module docstring.

    Reuses :class:`AudioQueriedTransformerDecoder`'s input checks, key preparation, layers and mask embedding;
    only the queries (N per frame) and the class head are its own.
    """

    @configurable
    def __init__(self, *, num_classes: int, num_queries: int, query_conditioning: str = "add", **kwargs):
        """
        Args:
            num_classes: K, classes including background (AVSBench-semantic: 71).
            num_queries: N >= 1, queries per frame.
            query_conditioning: one of :data:`QUERY_CONDITIONINGS`.
            kwargs: the arguments of :class:`AudioQueriedTransformerDecoder` (hidden_dim, audio_dim, num_frames,
                num_stages, nheads, dim_feedforward, dropout, cross_attn_scope, mask_embed) except query_type,
                which is "audio" (the parent's audio projection is the W of "add").
        """
        if kwargs.get("query_type", "audio") != "audio":
            raise ValueError(
                "AudioQueriedSemanticDecoder: MODEL.AQ_TRANSFORMER_DECODER.QUERY_TYPE must stay 'audio'; choose "
                "the AVSS queries with MODEL.AQ_SEMANTIC.QUERY_CONDITIONING (e.g. 'vanilla')"
            )
        super().__init__(**dict(kwargs, query_type="audio"))
        audio_dim, hidden_dim = self.audio_dim, self.hidden_dim
        if query_conditioning not in QUERY_CONDITIONINGS:
            raise ValueError(
                f"AudioQueriedSemanticDecoder: QUERY_CONDITIONING must be one of {QUERY_CONDITIONINGS}, "
                f"got {query_conditioning!r}"
            )
        if num_queries < 1:
            raise ValueError(f"AudioQueriedSemanticDecoder: NUM_QUERIES must be >= 1, got {num_queries}")
        if num_classes < 1:
            raise ValueError(f"AudioQueriedSemanticDecoder: NUM_CLASSES must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.num_queries = num_queries
        self.query_conditioning = query_conditioning
        # The parent built audio_query_proj = Linear(C_a -> C_f), the W of "add"; replace or drop it otherwise.
        if query_conditioning == "audio_only":
            self.audio_query_proj = nn.Linear(audio_dim, num_queries * hidden_dim)  # the N maps W_n side by side
        elif query_conditioning == "vanilla":
            del self.audio_query_proj
        if query_conditioning in ("add", "vanilla"):
            self.query_embed = nn.Embedding(num_queries, hidden_dim)
        # Mask2Former's class head: LayerNorm, then Linear(C_f -> K + 1); the last logit is "no object".
        self.class_head = nn.Sequential(nn.LayerNorm(hidden_dim), nn.Linear(hidden_dim, num_classes + 1))

    @classmethod
    def from_config(cls, cfg):
        args = super().from_config(cfg)
        sem = cfg.MODEL.AQ_SEMANTIC
        args.update(
            num_classes=sem.NUM_CLASSES, num_queries=sem.NUM_QUERIES, query_conditioning=sem.QUERY_CONDITIONING
        )
        return args

    # ------------------------------------------------------------------ building blocks
    def initial_queries(self, audio: Optional[torch.Tensor], batch: int) -> torch.Tensor:
        """Q^0, [B, T, N, C_f] from audio A [B, T, C_a] (see :data:`QUERY_CONDITIONINGS`)."""
        frames = audio.shape[1]
        if self.query_conditioning == "add":
            embed = self.query_embed.weight[None, None]  # [1, 1, N, C_f]
            return embed + self.audio_query_proj(audio)[:, :, None]  # [1, 1, N, C] + [B, T, 1, C] -> [B, T, N, C]
        if self.query_conditioning == "audio_only":
            return self.audio_query_proj(audio).view(batch, frames, self.num_queries, self.hidden_dim)
        return self.query_embed.weight.expand(batch, frames, -1, -1)  # [N, C] -> [B, T, N, C]

    def predict_classes(self, queries: torch.Tensor) -> torch.Tensor:
        """queries [..., C_f] -> class logits [..., K + 1] (index K = "no object")."""
        return self.class_head(queries)

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
            audio: A, [B, T, C_a] (required; with "vanilla" conditioning only its shape is used).

        Returns:
            dict with "pred_logits" [B, T, N, K+1] and "pred_masks" [B, T, N, H4, W4] (last layer),
            "aux_outputs" (layers 1..L-1, each {"pred_logits", "pred_masks"} of those shapes), "queries"
            (L tensors [B, T, N, C_f]) and "layer_features" (L tensors [B*T, C_f, H_l, W_l]).
        """
        batch, frames = self._clip_shape(multi_scale_features, audio)
        self._check_features(list(multi_scale_features), batch * frames, "multi_scale_features")
        self._check_features([mask_features], batch * frames, "mask_features")
        n, channels = self.num_queries, self.hidden_dim

        memories = [self._flatten_scale(feat, level) for level, feat in enumerate(multi_scale_features)]
        queries = self.initial_queries(audio, batch).reshape(batch, frames * n, channels)  # [B, T*N, C]
        all_queries, layer_features = self.run_layers(queries, memories, multi_scale_features, n)  # eq. (3)-(5)
        all_queries = [q.view(batch, frames, n, channels) for q in all_queries]  # L x [B, T, N, C]
        layers = len(all_queries)
        # eq. (6) for every layer and query in one product: the L*N (layer, query) pairs are the columns
        embedded = torch.stack([self.mask_embed(q) for q in all_queries])  # [L, B, T, N, C]
        columns = embedded.permute(0, 3, 1, 2, 4).reshape(layers * n, batch, frames, channels)  # [L*N, B, T, C]
        masks = predict_masks_of_layers(mask_features, columns)  # [L*N, B, T, H4, W4]
        masks = masks.view(layers, n, batch, frames, *masks.shape[-2:]).permute(0, 2, 3, 1, 4, 5)  # [L, B, T, N, h, w]
        logits = [self.predict_classes(q) for q in all_queries]  # L x [B, T, N, K+1]
        return {
            "pred_logits": logits[-1],
            "pred_masks": masks[-1],
            "aux_outputs": [{"pred_logits": c, "pred_masks": m} for c, m in zip(logits[:-1], masks[:-1])],
            "queries": all_queries,
            "layer_features": layer_features,
        }
