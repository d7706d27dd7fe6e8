"""Normalisation layers by name."""

from __future__ import annotations

from torch import nn

NORMS: dict[str, type[nn.Module]] = {
    "layernorm": nn.LayerNorm,
    "rmsnorm": nn.RMSNorm,
}


def build_norm(kind: str, hidden_size: int, eps: float) -> nn.Module:
    """Return a norm over the last dimension, ``"layernorm"`` or ``"rmsnorm"``."""
    if kind not in NORMS:
        raise KeyError(f"unknown norm {kind!r}; allowed: {sorted(NORMS)}")
    return NORMS[kind](hidden_size, eps=eps)
