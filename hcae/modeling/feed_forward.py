"""Position-wise feed-forward layers: GELU MLP and SwiGLU."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GeluFeedForward(nn.Module):
    """``Linear -> GELU -> Linear``, the BERT feed-forward (Hendrycks and Gimpel, 2016, for GELU).

    Args:
        hidden_size: channels in and out.
        intermediate_size: hidden width.
    """

    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.up = nn.Linear(hidden_size, intermediate_size)
        self.down = nn.Linear(intermediate_size, hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(hidden_states)))


class SwiGluFeedForward(nn.Module):
    """``down(silu(gate(x)) * up(x))``, the SwiGLU layer of Shazeer (2020), "GLU Variants Improve Transformer".

    Args:
        hidden_size: channels in and out.
        intermediate_size: hidden width of the gate and up projections. `HcaeConfig` sets it about
            two thirds of the nominal width so that the layer keeps the GELU layer's parameter count.
    """

    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.gate = nn.Linear(hidden_size, intermediate_size)
        self.up = nn.Linear(hidden_size, intermediate_size)
        self.down = nn.Linear(intermediate_size, hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(hidden_states)) * self.up(hidden_states))


FEED_FORWARDS: dict[str, type[nn.Module]] = {
    "gelu": GeluFeedForward,
    "swiglu": SwiGluFeedForward,
}


def build_feed_forward(kind: str, hidden_size: int, intermediate_size: int) -> nn.Module:
    """Return the feed-forward layer named ``kind``, ``"gelu"`` or ``"swiglu"``."""
    if kind not in FEED_FORWARDS:
        raise KeyError(f"unknown feed_forward {kind!r}; allowed: {sorted(FEED_FORWARDS)}")
    return FEED_FORWARDS[kind](hidden_size, intermediate_size)
