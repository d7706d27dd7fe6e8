"""Poolers that turn token states into one vector per sequence, reading only real tokens."""

from __future__ import annotations

import torch
from torch import nn


class MeanPooling(nn.Module):
    """Average of the real tokens' states."""

    def forward(self, hidden_states: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        # (B, T) -> (B, T, 1), in the states' dtype so the product stays in it
        weights = token_mask.unsqueeze(-1).to(hidden_states.dtype)
        counts = weights.sum(dim=1).clamp(min=1.0)
        return (hidden_states * weights).sum(dim=1) / counts


class ClsPooling(nn.Module):
    """State of the first token ([CLS] for a BERT tokenizer)."""

    def forward(self, hidden_states: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        return hidden_states[:, 0]


class MaxPooling(nn.Module):
    """Channel-wise maximum over the real tokens."""

    def forward(self, hidden_states: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        masked = hidden_states.masked_fill(~token_mask.unsqueeze(-1), torch.finfo(hidden_states.dtype).min)
        return masked.max(dim=1).values


POOLERS: dict[str, type[nn.Module]] = {
    "mean": MeanPooling,
    "cls": ClsPooling,
    "max": MaxPooling,
}


def build_pooler(kind: str) -> nn.Module:
    """Return the pooler named ``kind``: ``"mean"``, ``"cls"`` or ``"max"``."""
    if kind not in POOLERS:
        raise KeyError(f"unknown pooling {kind!r}; allowed: {sorted(POOLERS)}")
    return POOLERS[kind]()
