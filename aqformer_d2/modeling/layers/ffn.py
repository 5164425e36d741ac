"""Position-wise feed-forward block with residual connection and LayerNorm."""
import torch
from torch import nn

from ..ops import linear
from .linear import Linear

__all__ = ["FFNLayer"]


class FFNLayer(nn.Module):
    """``x + Dropout(W2 act(W1 x))`` followed (post-norm) or preceded (pre-norm) by LayerNorm.

    With ``post_norm_on_branch=True`` the LayerNorm is applied to the branch before the residual sum,
    ``x + LN(FFN(x))``, which is the form of the paper's eq. (3)-(5).

    Args:
        d_model: input and output width C.
        dim_feedforward: hidden width.
        dropout: dropout on the hidden activation and on the branch output.
        activation: "relu" or "gelu".
        norm_position: "post" -> ``LN(x + FFN(x))``; "branch" -> ``x + LN(FFN(x))`` (eq. 5);
            "pre" -> ``x + FFN(LN(x))``.
    """

    def __init__(
        self,
        d_model: int,
        dim_feedforward: int,
        dropout: float = 0.0,
        activation: str = "relu",
        norm_position: str = "post",
    ):
        super().__init__()
        if activation not in ("relu", "gelu"):
            raise ValueError(f"FFNLayer: activation must be 'relu' or 'gelu', got {activation!r}")
        if norm_position not in ("post", "branch", "pre"):
            raise ValueError(f"FFNLayer: norm_position must be 'post', 'branch' or 'pre', got {norm_position!r}")
        self.linear1 = Linear(d_model, dim_feedforward)
        self.linear2 = Linear(dim_feedforward, d_model)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)
        self.activation = activation
        self.norm_position = norm_position
        nn.init.xavier_uniform_(self.linear1.weight)
        nn.init.xavier_uniform_(self.linear2.weight)
        nn.init.zeros_(self.linear1.bias)
        nn.init.zeros_(self.linear2.bias)

    def _branch(self, x: torch.Tensor) -> torch.Tensor:
        """FFN(x) = W2 act(W1 x + b1) + b2 with dropout after act and at the end: [..., C] -> [..., C]."""
        hidden = linear(x, self.linear1.weight, self.linear1.bias, activation=self.activation)  # [..., C_ff]
        return self.dropout(self.linear2(self.dropout(hidden)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [..., C] -> [..., C]."""
        if self.norm_position == "pre":
            return x + self._branch(self.norm(x))
        if self.norm_position == "branch":
            return x + self.norm(self._branch(x))
        return self.norm(x + self._branch(x))
