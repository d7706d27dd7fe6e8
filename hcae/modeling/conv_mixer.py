"""Depthwise-separable convolution over tokens.

A depthwise convolution mixes each channel along the sequence with its own small kernel, and a
pointwise (1x1) projection then mixes channels. Factorising a full convolution this way is the
depthwise-separable convolution of Chollet (2017), "Xception", used for text by Kaiser et al.
(2017), "Depthwise Separable Convolutions for Neural Machine Translation". Its cost grows
linearly with sequence length, where self-attention grows quadratically.
"""

from __future__ import annotations

import torch
from torch import nn


class DepthwiseSeparableConvMixer(nn.Module):
    """Token mixer: depthwise Conv1d over tokens, then a pointwise linear projection.

    Args:
        hidden_size: channels in and out.
        kernel_size: odd kernel width in tokens; ``kernel_size // 2`` zeros pad each end of the
            sequence, so the output has the input's length.
    """

    def __init__(self, hidden_size: int, kernel_size: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv1d(
            hidden_size, hidden_size, kernel_size, padding=kernel_size // 2, groups=hidden_size
        )
        self.pointwise = nn.Linear(hidden_size, hidden_size)

    def forward(self, hidden_states: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        """Mix tokens.

        Args:
            hidden_states: ``(B, T, C)``.
            token_mask: ``(B, T)`` bool, True at real tokens and False at padding.

        Returns:
            ``(B, T, C)``.
        """
        # zero the padding first: a real token near the end of a short sentence would otherwise read
        # the states of pad positions through the kernel, and its output would depend on the batch
        hidden_states = hidden_states.masked_fill(~token_mask.unsqueeze(-1), 0.0)

        # (B, T, C) -> (B, C, T): Conv1d slides over the last dimension
        mixed = self.depthwise(hidden_states.transpose(1, 2))

        # (B, C, T) -> (B, T, C)
        return self.pointwise(mixed.transpose(1, 2))
