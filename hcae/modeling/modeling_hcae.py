"""The HCAE encoder: token and position embeddings, a stack of pre-norm residual blocks whose token
mixer is a depthwise-separable convolution or self-attention, a final norm and a pooler.

This file and the layer files it imports with relative imports are copied next to the weights by
``save_pretrained``, so ``AutoModel.from_pretrained(folder, trust_remote_code=True)`` rebuilds the
model without hcae installed. Keep every import here either relative or from torch/transformers.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .attention_mixer import SelfAttentionMixer
from .configuration_hcae import HcaeConfig
from .conv_mixer import DepthwiseSeparableConvMixer
from .feed_forward import build_feed_forward
from .layer_scale import LayerScale, build_layer_scale
from .norm import build_norm
from .pooling import build_pooler


def build_mixer(kind: str, config: HcaeConfig) -> nn.Module:
    """Return the token mixer named ``kind``: ``"conv"`` or ``"attn"``."""
    if kind == "conv":
        return DepthwiseSeparableConvMixer(config.hidden_size, config.conv_kernel_size)
    if kind == "attn":
        return SelfAttentionMixer(config.hidden_size, config.num_attention_heads, config.attention_probs_dropout_prob)
    raise KeyError(f"unknown mixer {kind!r}; allowed: ['attn', 'conv']")


class HcaeEmbeddings(nn.Module):
    """Sum of learned token and absolute position embeddings, then a norm and dropout."""

    def __init__(self, config: HcaeConfig) -> None:
        super().__init__()
        self.max_positions = config.max_position_embeddings
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.norm = build_norm(config.norm, config.hidden_size, config.norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        if length > self.max_positions:
            raise ValueError(
                f"input of {length} tokens is longer than max_position_embeddings={self.max_positions}; "
                f"truncate the input (for sentence-transformers: set max_seq_length)"
            )

        # (T,) -> broadcast over the batch: inputs are right-padded, so position i is token i
        positions = torch.arange(length, device=input_ids.device)
        embeddings = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        return self.dropout(self.norm(embeddings))


class HcaeBlock(nn.Module):
    """Pre-norm residual block: ``x + scale(mixer(norm(x)))``, then ``x + scale(ffn(norm(x)))``.

    With LayerScale off, both ``*_scale`` modules are `nn.Identity`.

    Args:
        config: the model configuration.
        mixer_type: ``"conv"`` or ``"attn"``.
    """

    def __init__(self, config: HcaeConfig, mixer_type: str) -> None:
        super().__init__()
        self.mixer_type = mixer_type
        self.mixer_norm = build_norm(config.norm, config.hidden_size, config.norm_eps)
        self.mixer = build_mixer(mixer_type, config)
        self.mixer_scale = build_layer_scale(config.hidden_size, config.layer_scale_init)
        self.ffn_norm = build_norm(config.norm, config.hidden_size, config.norm_eps)
        self.feed_forward = build_feed_forward(config.feed_forward, config.hidden_size, config.feed_forward_hidden_size)
        self.ffn_scale = build_layer_scale(config.hidden_size, config.layer_scale_init)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        mixed = self.mixer(self.mixer_norm(hidden_states), token_mask)
        hidden_states = hidden_states + self.dropout(self.mixer_scale(mixed))

        transformed = self.feed_forward(self.ffn_norm(hidden_states))
        return hidden_states + self.dropout(self.ffn_scale(transformed))


class HcaePreTrainedModel(PreTrainedModel):
    """Weight initialisation and loading for HCAE models."""

    config_class = HcaeConfig
    base_model_prefix = "hcae"
    main_input_name = "input_ids"
    _no_split_modules = ["HcaeBlock"]

    def _init_weights(self, module: nn.Module) -> None:
        # linear, convolution, embedding and norm weights follow the transformers defaults
        # (normal with std=initializer_range, zero bias, unit norm scale)
        super()._init_weights(module)
        if isinstance(module, LayerScale):
            init.constant_(module.gamma, module.init_value)


class HcaeModel(HcaePreTrainedModel):
    """The HCAE encoder. Returns token states and a pooled sentence embedding.

    Args:
        config: the model configuration.
    """

    def __init__(self, config: HcaeConfig) -> None:
        super().__init__(config)
        self.embeddings = HcaeEmbeddings(config)
        self.layers = nn.ModuleList(HcaeBlock(config, kind) for kind in config.mixer_types)
        self.final_norm = build_norm(config.norm, config.hidden_size, config.norm_eps)
        self.pooler = build_pooler(config.pooling)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutputWithPooling | tuple[torch.Tensor, ...]:
        """Encode a right-padded batch.

        Args:
            input_ids: ``(B, T)`` token ids.
            attention_mask: ``(B, T)``, 1 at real tokens and 0 at padding; all ones if omitted.
            token_type_ids: accepted so that a BERT tokenizer's output can be passed as is, and
                ignored: the model has no segment embeddings.
            output_hidden_states: also return the embeddings and every layer's output.
            return_dict: return a `BaseModelOutputWithPooling` (default) rather than a tuple.

        Returns:
            ``last_hidden_state`` ``(B, T, C)`` and ``pooler_output`` ``(B, C)``, pooled over
            real tokens as ``config.pooling`` says, plus ``hidden_states`` when asked for.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        token_mask = attention_mask.bool()

        hidden_states = self.embeddings(input_ids)
        all_hidden_states = [hidden_states] if output_hidden_states else None
        for layer in self.layers:
            hidden_states = layer(hidden_states, token_mask)
            if all_hidden_states is not None:
                all_hidden_states.append(hidden_states)

        hidden_states = self.final_norm(hidden_states)
        pooled = self.pooler(hidden_states, token_mask)

        if return_dict is False:
            outputs = (hidden_states, pooled)
            return outputs + (tuple(all_hidden_states),) if all_hidden_states is not None else outputs
        return BaseModelOutputWithPooling(
            last_hidden_state=hidden_states,
            pooler_output=pooled,
            hidden_states=tuple(all_hidden_states) if all_hidden_states is not None else None,
        )


__all__ = ["HcaeModel", "HcaePreTrainedModel"]
