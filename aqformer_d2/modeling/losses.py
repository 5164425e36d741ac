"""AQFormer losses (paper §3.5, eq. 13-14, and the AVSim loss of §3.3, eq. 7-8).

* eq. (14) mask losses per decoder layer: :func:`sigmoid_bce_loss`, :func:`dice_loss` (Mask2Former's
  definitions), averaged over the frames that carry a ground-truth mask.
* eq. (7)-(8) AVSim loss: :func:`avsim_loss`.
* eq. (13)-(14) weighted sum over layers: :class:`AQFormerCriterion`.

Shapes: B clips, T frames, H4 x W4 mask-logit size, H x W ground-truth size (the padded input size).
The choices the paper leaves open are listed in docs/paper_choices.md ("Transformer decoder and losses").
"""
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["sigmoid_bce_loss", "dice_loss", "avsim_loss", "AQFormerCriterion", "SIM_REDUCTIONS"]

# "sum": eq. (7) as printed (sum over layers l and frame pairs p, q), then mean over the B clips;
# "mean": mean over layers, frame pairs and clips.
SIM_REDUCTIONS = ("sum", "mean")


def _valid_frames(
    pred_masks: torch.Tensor, gt_masks: torch.Tensor, mask_valid: Optional[torch.Tensor]
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Select the frames with ground truth and bring the logits to the ground-truth size.

    Args:
        pred_masks: logits [B, T, H4, W4].
        gt_masks: {0, 1} masks [B, T, H, W] (any dtype).
        mask_valid: bool [B, T] or None (all frames valid).

    Returns:
        (logits [V, H*W], targets [V, H*W] float) for the V valid frames. Invalid frames are dropped
        by boolean indexing before any arithmetic, so they receive exactly zero gradient and their
        values (even NaN) cannot influence the loss.
    """
    if pred_masks.dim() != 4 or gt_masks.dim() != 4 or pred_masks.shape[:2] != gt_masks.shape[:2]:
        raise ValueError(
            f"mask loss: pred_masks [B, T, H4, W4] and gt_masks [B, T, H, W] must agree on B, T; got "
            f"{tuple(pred_masks.shape)} and {tuple(gt_masks.shape)}"
        )
    if mask_valid is None:
        mask_valid = torch.ones(pred_masks.shape[:2], dtype=torch.bool, device=pred_masks.device)
    if mask_valid.dtype != torch.bool or mask_valid.shape != pred_masks.shape[:2]:
        raise ValueError(
            f"mask loss: mask_valid must be a bool tensor of shape {tuple(pred_masks.shape[:2])}, got "
            f"{mask_valid.dtype} {tuple(mask_valid.shape)}"
        )
    logits = pred_masks[mask_valid]  # [B, T, H4, W4] -> [V, H4, W4]
    targets = gt_masks[mask_valid].to(logits.dtype)  # [B, T, H, W] -> [V, H, W]
    if logits.shape[-2:] != targets.shape[-2:]:
        # bilinear upsampling of the logits to the ground-truth size: [V, H4, W4] -> [V, H, W]
        logits = F.interpolate(logits[:, None], size=targets.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return logits.flatten(1), targets.flatten(1)


def sigmoid_bce_loss(
    pred_masks: torch.Tensor, gt_masks: torch.Tensor, mask_valid: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """L_bce of eq. (14) for one decoder layer: per frame the mean binary cross-entropy over the
    pixels, averaged over the valid frames (Mask2Former's ``sigmoid_ce_loss``).

    Args:
        pred_masks: logits [B, T, H4, W4], bilinearly upsampled to H x W when the sizes differ.
        gt_masks: {0, 1} masks [B, T, H, W].
        mask_valid: bool [B, T]; frames marked False contribute nothing. None: all frames.

    Returns:
        scalar; 0 (still attached to ``pred_masks``) when no frame is valid.
    """
    logits, targets = _valid_frames(pred_masks, gt_masks, mask_valid)
    return _bce_of_frames(logits, targets) if logits.shape[0] else pred_masks.sum() * 0.0


def _bce_of_frames(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """logits, targets [V, H*W] (V >= 1) -> mean over frames of the per-frame mean BCE."""
    per_frame = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(dim=1)  # [V]
    return per_frame.mean()


def dice_loss(
    pred_masks: torch.Tensor, gt_masks: torch.Tensor, mask_valid: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """L_dice of eq. (14) for one decoder layer: per frame ``1 - (2 Σ p g + 1) / (Σ p + Σ g + 1)`` with
    p = sigmoid(logit), averaged over the valid frames (Mask2Former's ``dice_loss``).

    Args / Returns: as :func:`sigmoid_bce_loss`.
    """
    logits, targets = _valid_frames(pred_masks, gt_masks, mask_valid)
    return _dice_of_frames(logits, targets) if logits.shape[0] else pred_masks.sum() * 0.0


def _dice_of_frames(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """logits, targets [V, H*W] (V >= 1) -> mean over frames of the per-frame Dice loss."""
    probs = logits.sigmoid()  # [V, H*W]
    numerator = 2.0 * (probs * targets).sum(dim=1) + 1.0  # [V]
    denominator = probs.sum(dim=1) + targets.sum(dim=1) + 1.0  # [V]
    return (1.0 - numerator / denominator).mean()


# Vectors of norm <= this have no direction (F.normalize's eps): cosine similarity is undefined for them.
_COSINE_EPS = 1e-8


def _cosine_matrix(x: torch.Tensor) -> torch.Tensor:
    """x [B, T, C] -> pairwise cosine similarities [B, T, T] (a zero vector has similarity 0 to all)."""
    unit = F.normalize(x, dim=-1, eps=_COSINE_EPS)
    return unit @ unit.transpose(1, 2)


def _pairs_with_direction(z: torch.Tensor) -> torch.Tensor:
    """z [B, T, C] -> float [B, T, T]: 1 where both Z_p and Z_q have a direction (norm > eps), else 0.

    Z_p = 0 when the predicted mask of frame p is empty (eq. 8 pools nothing), e.g. on negative audio; its
    cosine similarity (eq. 7) is undefined, so the pairs with such a frame are left out. Left in, the zero
    vector's similarity 0 would push every query pair of a silent clip towards orthogonality and, with the
    gradient through Ŷ, reward predicting foreground where nothing sounds."""
    present = z.norm(dim=-1) > _COSINE_EPS  # [B, T]
    return (present[:, :, None] & present[:, None, :]).to(z.dtype)  # [B, T, T]


def avsim_loss(
    queries: List[torch.Tensor],
    layer_features: List[torch.Tensor],
    pred_masks: torch.Tensor,
    reduction: str = "sum",
    detach_mask: bool = True,
) -> torch.Tensor:
    """AVSim loss, eq. (7)-(8):

    ``Z_p^l = Avg(M̂_p^l ⊙ Downsample(Ŷ_p))`` (8),
    ``L_sim = Σ_l Σ_p Σ_q |Sim(A_p^l, A_q^l) - Sim(Z_p^l, Z_q^l)|`` (7), Sim = cosine similarity.

    Ŷ is the final prediction of eq. (6) (sigmoid probabilities of the last layer's logits), by default
    detached: it only selects the pixels; the loss trains the queries A^l and the features M̂^l
    (``detach_mask=False``: the gradient also reaches the mask, as the equation, which prints no
    stop-gradient, reads). Downsample is area interpolation (adaptive average pooling) to H_l x W_l;
    Avg is the global average over the H_l * W_l pixels. All T frames take part (no ground truth is needed),
    except that a pair (p, q) in which Z_p or Z_q is the zero vector (an empty predicted mask: no direction,
    cosine undefined) contributes 0; "mean" still divides by all L * T * T * B terms.

    Args:
        queries: L tensors A^l, [B, T, C].
        layer_features: L tensors M̂^l, [B*T, C, H_l, W_l] (the features layer l attended to).
        pred_masks: final mask logits, [B, T, H4, W4].
        reduction: "sum" (eq. 7 as printed: sum over l, p, q; mean over the B clips) or "mean"
            (mean over l, p, q and clips).
        detach_mask: stop the gradient through Ŷ (True) or not (False).

    Returns:
        scalar.
    """
    if reduction not in SIM_REDUCTIONS:
        raise ValueError(f"avsim_loss: reduction must be one of {SIM_REDUCTIONS}, got {reduction!r}")
    if len(queries) == 0 or len(queries) != len(layer_features):
        raise ValueError(
            f"avsim_loss: need one feature map per query set, got {len(queries)} queries and "
            f"{len(layer_features)} layer_features"
        )
    if pred_masks.dim() != 4:
        raise ValueError(f"avsim_loss: pred_masks must be [B, T, H4, W4], got {tuple(pred_masks.shape)}")
    batch, frames = pred_masks.shape[:2]
    dtype = torch.promote_types(pred_masks.dtype, torch.float32)  # float32 under AMP, float64 in a float64 model
    masks = pred_masks.detach() if detach_mask else pred_masks
    probs = masks.to(dtype).sigmoid()  # Ŷ, [B, T, H4, W4]
    per_layer = []
    for a, feat in zip(queries, layer_features):
        matches = a.shape[:2] == (batch, frames) and feat.dim() == 4
        if not matches or feat.shape[0] != batch * frames or feat.shape[1] != a.shape[2]:
            raise ValueError(
                f"avsim_loss: queries [B={batch}, T={frames}, C] and layer_features [B*T, C, H_l, W_l] "
                f"do not match: {tuple(a.shape)} vs {tuple(feat.shape)}"
            )
        channels, height, width = feat.shape[1:]
        y_small = F.adaptive_avg_pool2d(probs, (height, width))  # Downsample: [B, T, H4, W4] -> [B, T, H_l, W_l]
        feat = feat.to(dtype).reshape(batch, frames, channels, height, width)  # [B*T, C, h, w] -> [B, T, C, h, w]
        z = (feat * y_small[:, :, None]).mean(dim=(-2, -1))  # eq. (8): Z^l, [B, T, C]
        # pairs with an empty-mask frame contribute 0 (a factor 1.0 elsewhere leaves the value bitwise unchanged)
        diff = (_cosine_matrix(a.to(dtype)) - _cosine_matrix(z)).abs() * _pairs_with_direction(z)  # [B, T, T]
        per_layer.append(diff)
    stacked = torch.stack(per_layer)  # [L, B, T, T]
    if reduction == "sum":
        return stacked.sum(dim=(0, 2, 3)).mean()
    return stacked.mean()


class AQFormerCriterion(nn.Module):
    """Eq. (13)-(14): ``L = Σ_layers (λ_bce L_bce + λ_dice L_dice) + λ_sim L_sim``.

    Returns a dict of named, already weighted losses; the total loss is the sum of its values:
    "loss_bce", "loss_dice" (last layer), "loss_bce_{i}", "loss_dice_{i}" for the i-th auxiliary layer
    (i = 0 .. L-2, only with deep supervision) and "loss_sim" (only when sim_weight > 0).
    """

    def __init__(
        self,
        bce_weight: float = 1.0,
        dice_weight: float = 1.0,
        sim_weight: float = 1.0,
        deep_supervision: bool = True,
        sim_reduction: str = "sum",
        sim_detach_mask: bool = True,
    ):
        """
        Args:
            bce_weight: λ_bce (MODEL.AQFORMER.BCE_WEIGHT).
            dice_weight: λ_dice (MODEL.AQFORMER.DICE_WEIGHT).
            sim_weight: λ_sim (MODEL.AQFORMER.SIM_WEIGHT); 0 disables the AVSim loss (not computed).
            deep_supervision: mask losses on every decoder layer (§3.5) instead of the last one only
                (MODEL.AQFORMER.DEEP_SUPERVISION).
            sim_reduction: "sum" or "mean", see :func:`avsim_loss`.
            sim_detach_mask: stop the AVSim gradient through Ŷ (MODEL.AQFORMER.SIM_DETACH_MASK), see
                :func:`avsim_loss`.
        """
        super().__init__()
        for name, value in (("bce_weight", bce_weight), ("dice_weight", dice_weight), ("sim_weight", sim_weight)):
            if value < 0:
                raise ValueError(f"AQFormerCriterion: {name} must be >= 0, got {value}")
        if sim_reduction not in SIM_REDUCTIONS:
            raise ValueError(f"AQFormerCriterion: sim_reduction must be one of {SIM_REDUCTIONS}, got {sim_reduction!r}")
        self.bce_weight = float(bce_weight)
        self.dice_weight = float(dice_weight)
        self.sim_weight = float(sim_weight)
        self.deep_supervision = bool(deep_supervision)
        self.sim_reduction = sim_reduction
        self.sim_detach_mask = bool(sim_detach_mask)

    def _mask_losses(self, pred_masks, gt_masks, mask_valid, suffix: str) -> Dict[str, torch.Tensor]:
        """:func:`sigmoid_bce_loss` and :func:`dice_loss` of one layer, sharing one selection and upsampling
        of the logits (the same operations as calling the two functions, half the upsampling work)."""
        logits, targets = _valid_frames(pred_masks, gt_masks, mask_valid)  # [V, H*W] each
        if logits.shape[0] == 0:
            bce = dice = pred_masks.sum() * 0.0
        else:
            bce, dice = _bce_of_frames(logits, targets), _dice_of_frames(logits, targets)
        return {f"loss_bce{suffix}": self.bce_weight * bce, f"loss_dice{suffix}": self.dice_weight * dice}

    def forward(
        self, outputs: Dict[str, object], gt_masks: torch.Tensor, mask_valid: Optional[torch.Tensor] = None
    ) -> Dict[str, torch.Tensor]:
        """
        Args:
            outputs: the transformer decoder's output dict (docs/interfaces.md).
            gt_masks: {0, 1} masks [B, T, H, W] at the (padded) input size.
            mask_valid: bool [B, T], frames that carry a ground-truth mask (None: all).

        Returns:
            dict name -> weighted scalar loss.
        """
        if "pred_masks" not in outputs:
            raise KeyError("AQFormerCriterion: outputs lack 'pred_masks'")
        losses = self._mask_losses(outputs["pred_masks"], gt_masks, mask_valid, "")
        if self.deep_supervision:
            for i, aux in enumerate(outputs.get("aux_outputs", [])):
                losses.update(self._mask_losses(aux["pred_masks"], gt_masks, mask_valid, f"_{i}"))
        if self.sim_weight > 0:
            missing = [k for k in ("queries", "layer_features") if k not in outputs]
            if missing:
                raise KeyError(f"AQFormerCriterion: the AVSim loss needs outputs {missing}")
            losses["loss_sim"] = self.sim_weight * avsim_loss(
                outputs["queries"], outputs["layer_features"], outputs["pred_masks"], self.sim_reduction,
                detach_mask=self.sim_detach_mask,
            )
        return losses
