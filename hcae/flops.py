"""Analytic FLOP counts of HCAE and BERT-shaped encoders, from their configs.

One multiply-add is two FLOPs, so an ``(m, k) @ (k, n)`` matrix product costs ``2*m*n*k``. Per
token and layer the counter includes:

- linear layers: ``2 * in_features * out_features`` each (the attention QKV and output
  projections, the pointwise projection after a convolution, the feed-forward matrices);
- attention scores and weighted values: ``QK^T`` and ``AV`` each cost ``2*T*d`` per token for a
  sequence of ``T`` tokens and width ``d``, so ``4*T*d`` per token and ``4*T^2*d`` per sequence;
- depthwise convolution: ``2*k*d`` for kernel width ``k``. The zero padding at the sequence ends
  is counted, because PyTorch computes those products too.

It ignores bias additions, norms, activations, softmax, dropout, LayerScale, the residual
additions, the padding masks, embedding lookups, pooling and BERT's pooler (one ``d x d`` layer
on the first token). By an estimate from their per-element costs, these add a few percent to
the FLOPs of the hcae model shapes. They take a larger share of the time than of the FLOPs,
because they are limited by memory bandwidth rather than arithmetic.

Training is counted as three forward passes: the backward pass of a matrix product computes the
gradients of both inputs, each as large a product as the forward one. The optimizer step is ignored.

A padded batch runs every layer on every position, pad tokens included, so the work that the
hardware does is ``batch_size * forward_flops(padded_length)``. The work that real tokens need,
``sum(forward_flops(length) for each text)``, is what an implementation without padding would do.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# the backward pass of every counted operation costs twice its forward pass
TRAINING_FORWARD_MULTIPLIER = 3

# Hugging Face activation names of a BERT feed-forward with two matrices
_TWO_MATRIX_ACTIVATIONS = ("gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh", "gelu_python", "relu", "silu", "swish")


@dataclass(frozen=True)
class EncoderShape:
    """The sizes of an encoder that decide its FLOPs.

    Args:
        hidden_size: width ``d`` of the token states.
        mixer_types: token mixer of each layer, bottom first: ``"conv"`` or ``"attn"``.
        feed_forward: ``"gelu"`` (two matrices, ``d -> h -> d``) or ``"swiglu"`` (three matrices:
            gate and up ``d -> h``, down ``h -> d``).
        feed_forward_hidden_size: the actual hidden width ``h`` of the feed-forward layers.
        conv_kernel_size: depthwise kernel width ``k`` in tokens; unused without conv layers.
    """

    hidden_size: int
    mixer_types: tuple[str, ...]
    feed_forward: str
    feed_forward_hidden_size: int
    conv_kernel_size: int = 0

    def __post_init__(self) -> None:
        unknown = sorted({kind for kind in self.mixer_types if kind not in ("conv", "attn")})
        if unknown:
            raise ValueError(f"unknown mixer {unknown[0]!r} in mixer_types; allowed: ['attn', 'conv']")
        if self.feed_forward not in ("gelu", "swiglu"):
            raise ValueError(f"feed_forward={self.feed_forward!r} is invalid; allowed: ['gelu', 'swiglu']")

    @classmethod
    def from_config(cls, config: Any) -> EncoderShape:
        """Read the shape from an `HcaeConfig` or a transformers `BertConfig`.

        Raises:
            ValueError: for any other ``model_type``, or a BERT activation that is not a
                two-matrix feed-forward.
        """
        model_type = getattr(config, "model_type", None)
        if model_type == "hcae":
            return cls(
                hidden_size=config.hidden_size,
                mixer_types=tuple(config.mixer_types),
                feed_forward=config.feed_forward,
                feed_forward_hidden_size=config.feed_forward_hidden_size,
                conv_kernel_size=config.conv_kernel_size,
            )
        if model_type == "bert":
            if config.hidden_act not in _TWO_MATRIX_ACTIVATIONS:
                raise ValueError(f"BERT hidden_act={config.hidden_act!r} is not supported by the FLOP counter")
            return cls(
                hidden_size=config.hidden_size,
                mixer_types=("attn",) * config.num_hidden_layers,
                feed_forward="gelu",
                feed_forward_hidden_size=config.intermediate_size,
            )
        raise ValueError(f"cannot count FLOPs of model_type={model_type!r}; supported: 'hcae', 'bert'")

    def to_dict(self) -> dict[str, Any]:
        """Return the shape as JSON-ready values."""
        return {
            "hidden_size": self.hidden_size,
            "mixer_types": list(self.mixer_types),
            "feed_forward": self.feed_forward,
            "feed_forward_hidden_size": self.feed_forward_hidden_size,
            "conv_kernel_size": self.conv_kernel_size,
        }


@dataclass(frozen=True)
class FlopCount:
    """FLOPs split by kind of operation (see the module docstring for what each includes)."""

    linear: int = 0
    attention: int = 0
    conv: int = 0

    @property
    def total(self) -> int:
        """Sum of all kinds."""
        return self.linear + self.attention + self.conv

    def __add__(self, other: FlopCount) -> FlopCount:
        return FlopCount(self.linear + other.linear, self.attention + other.attention, self.conv + other.conv)

    def __mul__(self, factor: int) -> FlopCount:
        return FlopCount(self.linear * factor, self.attention * factor, self.conv * factor)

    __rmul__ = __mul__

    def to_dict(self) -> dict[str, int]:
        """Return the counts and their total as JSON-ready values."""
        return {"linear": self.linear, "attention": self.attention, "conv": self.conv, "total": self.total}


def linear_flops_per_token(shape: EncoderShape) -> int:
    """Return the FLOPs of all linear layers for one token: twice their weight count."""
    d = shape.hidden_size
    h = shape.feed_forward_hidden_size
    feed_forward = (3 if shape.feed_forward == "swiglu" else 2) * 2 * d * h
    total = 0
    for kind in shape.mixer_types:
        # attention: QKV (d -> 3d) and output (d -> d) projections. conv: the pointwise d -> d projection.
        mixer = 2 * d * 4 * d if kind == "attn" else 2 * d * d
        total += mixer + feed_forward
    return total


def forward_flops(shape: EncoderShape, length: int) -> FlopCount:
    """Count the FLOPs of one forward pass over one sequence of ``length`` tokens.

    Raises:
        ValueError: if ``length`` is negative.
    """
    if length < 0:
        raise ValueError(f"length={length} is invalid: it must be a token count of 0 or more")
    d = shape.hidden_size
    attention_layers = shape.mixer_types.count("attn")
    conv_layers = shape.mixer_types.count("conv")
    return FlopCount(
        linear=length * linear_flops_per_token(shape),
        # QK^T and AV over all heads: 2*T*T*d each
        attention=attention_layers * 4 * length * length * d,
        conv=conv_layers * length * 2 * shape.conv_kernel_size * d,
    )


def padded_batch_forward_flops(shape: EncoderShape, batch_size: int, padded_length: int) -> FlopCount:
    """Count the FLOPs that a ``(batch_size, padded_length)`` batch executes, pad positions included."""
    return batch_size * forward_flops(shape, padded_length)


def real_tokens_forward_flops(shape: EncoderShape, lengths: Iterable[int]) -> FlopCount:
    """Count the FLOPs of encoding sequences of the given lengths one by one, without padding."""
    total = FlopCount()
    for length in lengths:
        total = total + forward_flops(shape, length)
    return total


def training_flops(forward: FlopCount) -> FlopCount:
    """Return the FLOPs of a forward and backward pass whose forward pass costs ``forward``."""
    return forward * TRAINING_FORWARD_MULTIPLIER


__all__ = [
    "TRAINING_FORWARD_MULTIPLIER",
    "EncoderShape",
    "FlopCount",
    "forward_flops",
    "linear_flops_per_token",
    "padded_batch_forward_flops",
    "real_tokens_forward_flops",
    "training_flops",
]
