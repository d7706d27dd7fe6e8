"""Multi-head self-attention over tokens with PyTorch's scaled-dot-product attention."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SelfAttentionMixer(nn.Module):
    """Token mixer: bidirectional multi-head self-attention that ignores padded keys.

    Args:
        hidden_size: channels in and out.
        num_heads: attention heads; must divide ``hidden_size``.
        dropout: dropout on the attention weights, active in training only.
    """

    def __init__(self, hidden_size: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.dropout = dropout
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.out = nn.Linear(hidden_size, hidden_size)

    def forward(self, hidden_states: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        """Mix tokens.

        Args:
            hidden_states: ``(B, T, C)``.
            token_mask: ``(B, T)`` bool, True at real tokens and False at padding.

        Returns:
            ``(B, T, C)``.
        """
        batch, length, channels = hidden_states.shape

        # (B, T, C) -> (B, T, 3, H, D) -> (3, B, H, T, D)
        qkv = self.qkv(hidden_states).view(batch, length, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)

        # (B, T) -> (B, 1, 1, T): every query may attend to every real key and to no padded one.
        # Padded query rows still see the real keys, so no row is fully masked and none turns NaN.
        key_mask = token_mask[:, None, None, :]
        attended = F.scaled_dot_product_attention(
            query, key, value, attn_mask=key_mask, dropout_p=self.dropout if self.training else 0.0
        )

        # (B, H, T, D) -> (B, T, H, D) -> (B, T, C)
        attended = attended.transpose(1, 2).reshape(batch, length, channels)
        return self.out(attended)
