"""2-D sine positional encoding (as in DETR / Mask2Former), written for this project."""
import math

import torch
from torch import nn

__all__ = ["PositionEmbeddingSine"]


class PositionEmbeddingSine(nn.Module):
    """Fixed sine/cosine encoding of the (y, x) pixel position.

    Args:
        num_pos_feats: features per axis; the output has ``2 * num_pos_feats`` channels.
        temperature: wavelength base.
        normalize: scale positions to [0, scale] before encoding.
        scale: the range used when ``normalize`` is True (default 2*pi).
    """

    def __init__(self, num_pos_feats: int = 128, temperature: float = 10000.0, normalize: bool = True,
                 scale: float = 2 * math.pi):
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = scale

    def forward(self, x: torch.Tensor, mask: torch.Tensor = None) -> torch.Tensor:
        """x: [N, C, H, W] (only its shape/device/dtype are used); mask: optional bool [N, H, W],
        True at padded pixels. Returns [N, 2 * num_pos_feats, H, W]."""
        n, _, h, w = x.shape
        # At least float32 (half-precision inputs under AMP still get a float32-accurate encoding);
        # float64 for a float64 model, so that no float32 round-off enters it.
        dtype = torch.promote_types(x.dtype, torch.float32)
        if mask is None:
            not_mask = torch.ones((n, h, w), device=x.device, dtype=dtype)
        else:
            not_mask = (~mask).to(dtype)
        y_embed = not_mask.cumsum(1)  # [N, H, W]
        x_embed = not_mask.cumsum(2)  # [N, H, W]
        if self.normalize:
            eps = 1e-6
            y_embed = (y_embed - 0.5) / (y_embed[:, -1:, :] + eps) * self.scale
            x_embed = (x_embed - 0.5) / (x_embed[:, :, -1:] + eps) * self.scale
        dim_t = torch.arange(self.num_pos_feats, dtype=dtype, device=x.device)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_pos_feats)
        pos_x = x_embed[..., None] / dim_t  # [N, H, W, F]
        pos_y = y_embed[..., None] / dim_t  # [N, H, W, F]
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
        pos = torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)  # [N, 2F, H, W]
        return pos.to(x.dtype)
