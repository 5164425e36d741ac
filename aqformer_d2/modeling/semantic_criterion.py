"""Losses of the AVSS head (beyond the paper; docs/paper_choices.md, "Beyond the paper: AVSS").

Definitions first (B clips, T frames, N queries per frame, K classes, L decoder layers):

* supervised frame: ``mask_valid & frame_valid`` and at least one pixel not equal to the ignore value.
  Only supervised frames enter the mask-classification losses; padded frames (``frame_valid`` False) and
  unlabelled frames contribute nothing (their queries are neither matched nor pushed to "no object").
* per layer, per supervised frame: the queries are matched to the frame's class masks
  (:mod:`..semantic_matcher`); then Mask2Former's losses
  - ``loss_ce``: cross-entropy over K+1 classes of all N queries of every supervised frame (matched: the
    target's class, others: "no object" with weight NO_OBJECT_WEIGHT), weighted mean over queries;
  - ``loss_mask`` / ``loss_dice``: BCE (mean over the supervised pixels) and Dice of each matched query's mask
    logits, bilinearly upsampled to the label size, against its target; summed over matches and divided by
    the number of targets in the batch (summed over processes, at least 1). Ignored pixels count nowhere.
  Layers 1..L-1 give ``loss_*_{i}`` when deep supervision is on (eq. 14 on every layer, as §3.5).
* AVSim, eq. (7)-(8) generalised to items i that each have a query vector A_i^l and a soft mask y_i on one frame:
  ``Z_i^l = Avg(M̂^l_frame(i) ⊙ Downsample(y_i))`` (8) and
  ``L_sim = mean_l mean_{(i, j) same clip} |Sim(A_i^l, A_j^l) - Sim(Z_i^l, Z_j^l)|`` (7), Sim = cosine.
  Items (:data:`SIM_QUERIES`): "matched" = the queries matched in the last layer (y = their sigmoid mask);
  "frame_mean" = every real frame (A = mean of its N queries, y = its predicted foreground: the semantic
  scores of all non-background classes summed, clipped to 1). y is detached (it only selects pixels).
"""
from typing import Dict, List, Tuple

import torch
from detectron2.utils import comm
from torch import nn
from torch.nn import functional as F

from .semantic_matcher import frame_targets, match_frame, matching_cost

__all__ = ["AQSemanticCriterion", "SIM_QUERIES", "object_features", "avsim_of_items"]

SIM_QUERIES = ("matched", "frame_mean")


def _loss_dtype(x: torch.Tensor) -> torch.dtype:
    """Losses are computed in float32 at least (float16 logits under AMP), float64 in a float64 model."""
    return torch.promote_types(x.dtype, torch.float32)


def object_features(layer_feature: torch.Tensor, frame_index: torch.Tensor, soft_masks: torch.Tensor) -> torch.Tensor:
    """Eq. (8) per item: ``Z_i = Avg(M̂_frame(i) ⊙ Downsample(y_i))``.

    Args:
        layer_feature: M̂^l, [B*T, C, h, w].
        frame_index: int64 [S], the frame (index b*T + t) of each item.
        soft_masks: y, [S, H4, W4] in [0, 1]; area-downsampled to h x w.

    Returns:
        Z^l, [S, C].
    """
    height, width = layer_feature.shape[-2:]
    y_small = F.adaptive_avg_pool2d(soft_masks[:, None], (height, width))  # [S, 1, h, w]
    return (layer_feature[frame_index].to(y_small.dtype) * y_small).mean(dim=(-2, -1))  # [S, C, h, w] -> [S, C]


def avsim_of_items(a: torch.Tensor, z: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """Eq. (7) for one layer: mean over the item pairs (i, j) of the same group (clip), (i, i) included, of
    ``|cos(a_i, a_j) - cos(z_i, z_j)|``. a [S, C], z [S, C], group int64 [S] -> scalar (0 when S = 0)."""
    unit_a = F.normalize(a.to(z.dtype), dim=-1, eps=1e-8)
    unit_z = F.normalize(z, dim=-1, eps=1e-8)
    diff = (unit_a @ unit_a.T - unit_z @ unit_z.T).abs()  # [S, S]
    same = group[:, None] == group[None, :]  # [S, S]
    return (diff * same).sum() / same.sum().clamp(min=1)


class AQSemanticCriterion(nn.Module):
    """The AVSS losses of the module docstring; returns a dict of weighted scalars whose sum is the loss."""

    def __init__(
        self,
        *,
        num_classes: int,
        class_weight: float,
        mask_weight: float,
        dice_weight: float,
        no_object_weight: float,
        cost_class: float,
        cost_mask: float,
        cost_dice: float,
        sim_weight: float,
        sim_queries: str = "matched",
        deep_supervision: bool = True,
        ignore_value: int = 255,
    ):
        """
        Args:
            num_classes: K (background included).
            class_weight, mask_weight, dice_weight: weights of loss_ce, loss_mask, loss_dice.
            no_object_weight: cross-entropy weight of the "no object" class.
            cost_class, cost_mask, cost_dice: matching cost weights (:mod:`..semantic_matcher`).
            sim_weight: λ_sim of the generalised AVSim loss; 0 switches it off (not computed).
            sim_queries: the AVSim items, one of :data:`SIM_QUERIES`.
            deep_supervision: losses on every decoder layer, not only the last.
            ignore_value: label of pixels without supervision.
        """
        super().__init__()
        weights = dict(class_weight=class_weight, mask_weight=mask_weight, dice_weight=dice_weight,
                       no_object_weight=no_object_weight, sim_weight=sim_weight, cost_class=cost_class,
                       cost_mask=cost_mask, cost_dice=cost_dice)
        for name, value in weights.items():
            if value < 0:
                raise ValueError(f"AQSemanticCriterion: {name} must be >= 0, got {value}")
        if sim_queries not in SIM_QUERIES:
            raise ValueError(f"AQSemanticCriterion: SIM_QUERIES must be one of {SIM_QUERIES}, got {sim_queries!r}")
        if num_classes < 1:
            raise ValueError(f"AQSemanticCriterion: num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.weights = {k: float(v) for k, v in weights.items()}
        self.sim_queries = sim_queries
        self.deep_supervision = bool(deep_supervision)
        self.ignore_value = int(ignore_value)

    # ------------------------------------------------------------------ targets and matching
    def supervised_frames(self, sem_seg, mask_valid, frame_valid) -> torch.Tensor:
        """bool [B, T]: the supervised frames (module docstring)."""
        has_labels = (sem_seg != self.ignore_value).flatten(2).any(-1)  # [B, T]
        return mask_valid & frame_valid & has_labels

    def match(self, out: Dict, frames: torch.Tensor, targets: List, pixel_valid: torch.Tensor) -> List[Tuple]:
        """Per supervised frame f = (b, t) (rows of ``frames`` [F, 2]): (query indices, target indices)."""
        size = pixel_valid.shape[-2:]
        matches = []
        for f, (b, t) in enumerate(frames.tolist()):
            classes, masks = targets[f]
            with torch.no_grad():
                logits = F.interpolate(out["pred_masks"][b, t][None], size=size, mode="bilinear",
                                       align_corners=False)[0]  # [N, h, w] -> [N, H, W]
                cost = matching_cost(
                    out["pred_logits"][b, t], logits.flatten(1), classes, masks.flatten(1), pixel_valid[f].flatten(),
                    self.weights["cost_class"], self.weights["cost_mask"], self.weights["cost_dice"],
                )  # [N, M]
            matches.append(match_frame(cost))
        return matches

    # ------------------------------------------------------------------ losses of one layer
    def layer_losses(self, out, frames, targets, matches, pixel_valid, num_masks, suffix: str):
        logits = out["pred_logits"]  # [B, T, N, K+1]
        zero = out["pred_masks"].sum() * 0.0
        if frames.shape[0] == 0:
            return {f"loss_ce{suffix}": zero, f"loss_mask{suffix}": zero, f"loss_dice{suffix}": zero}
        b_idx, t_idx = frames[:, 0], frames[:, 1]
        frame_logits = logits[b_idx, t_idx]  # [F, N, K+1]
        target_classes = torch.full(frame_logits.shape[:2], self.num_classes, dtype=torch.int64,
                                    device=logits.device)  # [F, N], "no object"
        rows, queries, tgt_masks = [], [], []
        for f, (q, j) in enumerate(matches):
            classes, masks = targets[f]
            target_classes[f, q] = classes[j].to(logits.device)
            rows.append(torch.full_like(q, f))
            queries.append(q)
            tgt_masks.append(masks[j])
        dtype = _loss_dtype(logits)
        class_weights = torch.ones(self.num_classes + 1, dtype=dtype, device=logits.device)
        class_weights[-1] = self.weights["no_object_weight"]  # in the loss's dtype (0.1 is not exact in float32)
        ce = F.cross_entropy(frame_logits.flatten(0, 1).to(dtype), target_classes.flatten(), weight=class_weights)
        rows, queries = torch.cat(rows).to(logits.device), torch.cat(queries).to(logits.device)  # [M_all]
        if rows.numel() == 0:
            bce = dice = zero
        else:
            pred = out["pred_masks"][b_idx[rows], t_idx[rows], queries]  # [M_all, h, w]
            pred = F.interpolate(pred[:, None], size=pixel_valid.shape[-2:], mode="bilinear",
                                 align_corners=False)[:, 0].flatten(1).to(dtype)  # [M_all, H*W]
            target = torch.cat(tgt_masks).flatten(1).to(pred.dtype)  # [M_all, H*W]
            weight = pixel_valid[rows].flatten(1).to(pred.dtype)  # [M_all, H*W]
            per_pixel = F.binary_cross_entropy_with_logits(pred, target, reduction="none")
            bce = ((per_pixel * weight).sum(-1) / weight.sum(-1).clamp(min=1.0)).sum() / num_masks
            probs = pred.sigmoid() * weight
            numerator = 2.0 * (probs * target).sum(-1) + 1.0
            denominator = probs.sum(-1) + (target * weight).sum(-1) + 1.0
            dice = (1.0 - numerator / denominator).sum() / num_masks
        w = self.weights
        return {f"loss_ce{suffix}": w["class_weight"] * ce, f"loss_mask{suffix}": w["mask_weight"] * bce,
                f"loss_dice{suffix}": w["dice_weight"] * dice}

    # ------------------------------------------------------------------ AVSim
    def sim_items(self, outputs, frames, matches, frame_valid) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, object]:
        """The AVSim items: (frame index b*T+t [S], clip [S], soft masks y [S, H4, W4] detached, query_of) with
        query_of(queries [B, T, N, C]) -> A [S, C]."""
        pred_masks = outputs["pred_masks"].detach()  # [B, T, N, h, w]
        frames_per_clip = pred_masks.shape[1]
        if self.sim_queries == "matched":
            pairs = [(b, t, q) for (b, t), (qs, _) in zip(frames.tolist(), matches) for q in qs.tolist()]
            index = torch.tensor(pairs, dtype=torch.int64, device=pred_masks.device).reshape(-1, 3)
            b, t, q = index.unbind(1)
            soft = pred_masks[b, t, q].to(_loss_dtype(pred_masks)).sigmoid()  # [S, h, w]
            return b * frames_per_clip + t, b, soft, lambda queries: queries[b, t, q]
        b, t = frame_valid.nonzero(as_tuple=True)  # real frames
        probs = outputs["pred_logits"].detach().to(_loss_dtype(pred_masks)).softmax(-1)  # [B, T, N, K+1]
        objectness = (1.0 - probs[..., 0] - probs[..., -1])[b, t]  # [S, N]: non-background, non-"no object"
        soft = torch.einsum("sn,snhw->shw", objectness, pred_masks[b, t].to(probs.dtype).sigmoid())
        soft = soft.clamp(max=1.0)  # [S, h, w]
        return b * frames_per_clip + t, b, soft, lambda queries: queries[b, t].mean(dim=1)

    def avsim(self, outputs, frames, matches, frame_valid) -> torch.Tensor:
        frame_index, clip, soft, query_of = self.sim_items(outputs, frames, matches, frame_valid)
        per_layer = []
        for queries, feature in zip(outputs["queries"], outputs["layer_features"]):
            z = object_features(feature, frame_index, soft)  # eq. (8), [S, C]
            per_layer.append(avsim_of_items(query_of(queries), z, clip))  # eq. (7)
        return torch.stack(per_layer).mean()

    # ------------------------------------------------------------------ forward
    def forward(self, outputs: Dict, sem_seg: torch.Tensor, mask_valid: torch.Tensor,
                frame_valid: torch.Tensor) -> Dict[str, torch.Tensor]:
        """
        Args:
            outputs: the AVSS decoder's output dict (:class:`AudioQueriedSemanticDecoder`).
            sem_seg: int64 [B, T, H, W] labels at the padded input size (ignore value where unsupervised).
            mask_valid: bool [B, T], frames that carry labels.
            frame_valid: bool [B, T], real (not padded) frames.

        Returns:
            dict name -> weighted scalar loss.
        """
        batch, frames_per_clip = outputs["pred_logits"].shape[:2]
        for name, flags in (("mask_valid", mask_valid), ("frame_valid", frame_valid)):
            if flags.dtype != torch.bool or tuple(flags.shape) != (batch, frames_per_clip):
                raise ValueError(f"AQSemanticCriterion: {name} must be bool [{batch}, {frames_per_clip}], got "
                                 f"{flags.dtype} {tuple(flags.shape)}")
        if sem_seg.dim() != 4 or tuple(sem_seg.shape[:2]) != (batch, frames_per_clip):
            raise ValueError(f"AQSemanticCriterion: sem_seg must be [B={batch}, T={frames_per_clip}, H, W], got "
                             f"{tuple(sem_seg.shape)}")
        supervised = self.supervised_frames(sem_seg, mask_valid, frame_valid)  # [B, T]
        frames = supervised.nonzero()  # [F, 2] rows (b, t)
        labels = sem_seg[supervised]  # [F, H, W]
        targets = [frame_targets(labels[f], self.ignore_value, self.num_classes) for f in range(labels.shape[0])]
        pixel_valid = labels != self.ignore_value  # [F, H, W]
        num_masks = torch.tensor(float(sum(c.numel() for c, _ in targets)), device=sem_seg.device)
        if comm.get_world_size() > 1:
            torch.distributed.all_reduce(num_masks)
        num_masks = (num_masks / comm.get_world_size()).clamp(min=1.0)

        layers = [("", outputs)]
        if self.deep_supervision:
            layers += [(f"_{i}", aux) for i, aux in enumerate(outputs.get("aux_outputs", []))]
        losses, last_matches = {}, None
        for suffix, out in layers:
            matches = self.match(out, frames, targets, pixel_valid)
            last_matches = matches if suffix == "" else last_matches
            losses.update(self.layer_losses(out, frames, targets, matches, pixel_valid, num_masks, suffix))
        if self.weights["sim_weight"] > 0:
            losses["loss_sim"] = self.weights["sim_weight"] * self.avsim(outputs, frames, last_matches, frame_valid)
        return losses
