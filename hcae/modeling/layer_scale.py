"""LayerScale: a learned per-channel scale on a residual branch.

Touvron et al., 2021, "Going deeper with Image Transformers" (CaiT), multiply each residual branch
by a diagonal matrix initialised to a small value such as 1e-5, so that a deep stack starts close
to the identity and each layer's contribution grows as training asks for it.
"""

from __future__ import annotations

import torch
from torch import nn


class LayerScale(nn.Module):
    """Multiply the last dimension by a learned vector.

    Args:
        hidden_size: length of the vector.
        init_value: value every entry starts at.
    """

    def __init__(self, hidden_size: int, init_value: float) -> None:
        super().__init__()
        self.init_value = init_value
        self.gamma = nn.Parameter(torch.full((hidden_size,), init_value))

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.gamma.fill_(self.init_value)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states * self.gamma

    def extra_repr(self) -> str:
        return f"{self.gamma.shape[0]}, init_value={self.init_value:g}"


def build_layer_scale(hidden_size: int, init_value: float | None) -> nn.Module:
    """Return a `LayerScale`, or `nn.Identity` when ``init_value`` is None (LayerScale off)."""
    if init_value is None:
        return nn.Identity()
    return LayerScale(hidden_size, init_value)
