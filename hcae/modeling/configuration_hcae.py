"""Configuration of a Hybrid Convolutional-Attention Encoder (HCAE).

The whole layer stack is one per-layer list of token-mixer names, ``mixer_types``: ``"conv"`` is a
depthwise-separable convolution over tokens and ``"attn"`` is multi-head self-attention. Shorthands
such as ``"5 conv + 3 attn"`` or ``"4 x (conv attn)"`` expand into that list when the config is
built, so no second field ever steers the layers.

This file is copied next to the weights by ``save_pretrained`` and must import nothing from hcae.
"""

from __future__ import annotations

import re
from typing import Any

from transformers import PreTrainedConfig

MIXER_TYPES = ("conv", "attn")
FEED_FORWARD_TYPES = ("gelu", "swiglu")
NORM_TYPES = ("layernorm", "rmsnorm")
POOLING_TYPES = ("mean", "cls", "max")

# one term of a mixer shorthand: "attn", "3 attn", "3 x attn", "3x(conv attn)"
_TERM_PATTERN = re.compile(r"^(?:(\d+)\s*(?:x\s*)?)?(?:\((?P<group>[^()]*)\)|(?P<name>[a-z_]+))$")


class HcaeConfigError(ValueError):
    """An invalid HCAE configuration value; the message names the field, the value and the fix."""


def expand_mixer_types(spec: str | list[str] | tuple[str, ...]) -> list[str]:
    """Expand a mixer shorthand into the per-layer list of mixer names.

    Args:
        spec: a list of names (``["conv", "attn"]``), or a string of terms joined by ``+`` or ``,``.
            A term is a name, a count and a name (``"5 conv"``, ``"5 x conv"``) or a count and a
            parenthesised group repeated in order (``"4 x (conv attn)"`` interleaves 8 layers).

    Returns:
        The per-layer list, for example ``["conv"] * 5 + ["attn"] * 3`` for ``"5 conv + 3 attn"``.

    Raises:
        HcaeConfigError: on an unknown name or a term that does not parse.
    """
    if isinstance(spec, (list, tuple)):
        names = [str(name).strip().lower() for name in spec]
    elif isinstance(spec, str):
        names = []
        for term in re.split(r"[+,]", spec.strip().lower()):
            names.extend(_expand_term(term.strip(), spec))
    else:
        raise HcaeConfigError(
            f"mixer_types must be a list of names or a shorthand string such as '5 conv + 3 attn', "
            f"got {type(spec).__name__} {spec!r}"
        )

    unknown = sorted({name for name in names if name not in MIXER_TYPES})
    if unknown:
        raise HcaeConfigError(
            f"mixer_types={spec!r} contains unknown mixer {unknown[0]!r}; allowed: {list(MIXER_TYPES)}"
        )
    if not names:
        raise HcaeConfigError(f"mixer_types={spec!r} describes no layers; give at least one of {list(MIXER_TYPES)}")
    return names


def _expand_term(term: str, spec: str) -> list[str]:
    match = _TERM_PATTERN.match(term)
    if match is None:
        raise HcaeConfigError(
            f"mixer_types={spec!r}: cannot parse the term {term!r}; write terms such as "
            f"'5 conv', '3 attn' or '4 x (conv attn)' joined by '+'"
        )
    count = int(match.group(1)) if match.group(1) else 1
    group = match.group("group")
    names = group.split() if group is not None else [match.group("name")]
    return names * count


def swiglu_hidden_size(hidden_size: int, intermediate_size: int) -> int:
    """Return the SwiGLU width whose parameter count matches a GELU feed-forward of ``intermediate_size``.

    A GELU feed-forward with biases has ``2*d*i + i + d`` parameters; SwiGLU (gate, up and down
    projections, with biases) has ``3*d*h + 2*h + d``. Equating them gives
    ``h = i * (2d + 1) / (3d + 2)``, about two thirds of ``i``, as in Shazeer (2020), "GLU Variants
    Improve Transformer", which shrinks the width so that the gated layer keeps the same size.
    """
    return max(1, round(intermediate_size * (2 * hidden_size + 1) / (3 * hidden_size + 2)))


class HcaeConfig(PreTrainedConfig):
    r"""Configuration of an [`HcaeModel`].

    Args:
        vocab_size (`int`, defaults to 30522):
            Vocabulary size; 30522 is the BERT-base-uncased WordPiece vocabulary.
        hidden_size (`int`, defaults to 384):
            Width of the token representations.
        mixer_types (`list[str]` or `str`, defaults to `"5 conv + 3 attn"`):
            Token mixer of each layer, bottom first: `"conv"` or `"attn"`. A shorthand string is
            expanded by [`expand_mixer_types`]; the saved config always contains the list.
        num_hidden_layers (`int`, *optional*):
            Number of layers. Derived from `mixer_types`; if given, it must equal its length.
        num_attention_heads (`int`, defaults to 6):
            Heads of every attention mixer; must divide `hidden_size`.
        conv_kernel_size (`int`, defaults to 7):
            Width in tokens of the depthwise convolution; odd, so the window around each token has as many
            neighbours on its left as on its right.
        intermediate_size (`int`, defaults to 1024):
            Nominal feed-forward width. A GELU feed-forward uses it as is; SwiGLU uses the width
            with the same parameter count, see [`swiglu_hidden_size`].
        feed_forward (`str`, defaults to `"gelu"`):
            Feed-forward kind: `"gelu"` or `"swiglu"`.
        layer_scale_init (`float`, *optional*):
            Initial value of the LayerScale vectors on both residual branches of every layer
            (Touvron et al., 2021, "Going deeper with Image Transformers"). `None` leaves
            LayerScale out of the model.
        norm (`str`, defaults to `"layernorm"`):
            Normalisation of the embeddings, the pre-norm blocks and the output: `"layernorm"`
            or `"rmsnorm"`.
        norm_eps (`float`, defaults to 1e-6):
            Epsilon of every norm.
        hidden_dropout_prob (`float`, defaults to 0.1):
            Dropout on the embeddings and on each residual branch.
        attention_probs_dropout_prob (`float`, defaults to 0.1):
            Dropout on attention weights.
        max_position_embeddings (`int`, defaults to 512):
            Number of learned absolute positions, so the longest input in tokens.
        pooling (`str`, defaults to `"mean"`):
            How token states become one sentence embedding: `"mean"` over real tokens, `"cls"`
            (the first token) or `"max"` over real tokens.
        prompts (`dict[str, str]`, *optional*):
            Text prefixes by prompt name, for example `{"query": "query: ", "document": "passage: "}`.
            The model itself never reads them; the sentence-transformers wrapper prepends them.
            `None` or an empty dict means no prefixes.
        initializer_range (`float`, defaults to 0.02):
            Standard deviation of the normal initialisation of linear, convolution and embedding weights.
        pad_token_id (`int`, defaults to 0):
            Id of the padding token; its embedding row starts at zero.
    """

    model_type = "hcae"

    vocab_size: int = 30522
    hidden_size: int = 384
    mixer_types: list[str] | str | None = None
    num_hidden_layers: int | None = None
    num_attention_heads: int = 6
    conv_kernel_size: int = 7
    intermediate_size: int = 1024
    feed_forward: str = "gelu"
    layer_scale_init: float | None = None
    norm: str = "layernorm"
    norm_eps: float = 1e-6
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    pooling: str = "mean"
    prompts: dict[str, str] | None = None
    initializer_range: float = 0.02
    pad_token_id: int | None = 0

    def __post_init__(self, **kwargs: Any) -> None:
        self.mixer_types = expand_mixer_types("5 conv + 3 attn" if self.mixer_types is None else self.mixer_types)
        if self.num_hidden_layers is None:
            self.num_hidden_layers = len(self.mixer_types)
        self.prompts = dict(self.prompts) if self.prompts else {}
        super().__post_init__(**kwargs)
        self.check()

    # ---- validation: every rule lives here, and every message names field, value and fix ----

    def check(self) -> None:
        """Raise `HcaeConfigError` on the first invalid field."""
        for name in ("vocab_size", "hidden_size", "num_attention_heads", "intermediate_size",
                     "max_position_embeddings", "conv_kernel_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise HcaeConfigError(f"{name}={value!r} is invalid: it must be a positive integer")

        if self.num_hidden_layers != len(self.mixer_types):
            raise HcaeConfigError(
                f"num_hidden_layers={self.num_hidden_layers!r} does not match the {len(self.mixer_types)} "
                f"entries of mixer_types; leave num_hidden_layers out, it is derived"
            )
        if self.conv_kernel_size % 2 == 0:
            raise HcaeConfigError(
                f"conv_kernel_size={self.conv_kernel_size} is invalid: it must be odd (3, 5, 7, ...) so the "
                f"convolution is centred on each token"
            )
        if self.hidden_size % self.num_attention_heads != 0:
            raise HcaeConfigError(
                f"num_attention_heads={self.num_attention_heads} does not divide hidden_size={self.hidden_size}; "
                f"choose a divisor such as {_divisors_near(self.hidden_size, self.num_attention_heads)}"
            )

        self._check_choice("feed_forward", FEED_FORWARD_TYPES)
        self._check_choice("norm", NORM_TYPES)
        self._check_choice("pooling", POOLING_TYPES)

        if self.layer_scale_init is not None:
            value = self.layer_scale_init
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
                raise HcaeConfigError(
                    f"layer_scale_init={value!r} is invalid: use a float in (0, 1] such as 1e-5, "
                    f"or null to leave LayerScale out"
                )
            self.layer_scale_init = float(value)

        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise HcaeConfigError(f"{name}={value!r} is invalid: it must be a probability in [0, 1)")
        if isinstance(self.norm_eps, bool) or not isinstance(self.norm_eps, (int, float)) or self.norm_eps <= 0:
            raise HcaeConfigError(f"norm_eps={self.norm_eps!r} is invalid: it must be a positive float such as 1e-6")

        if not all(isinstance(key, str) and isinstance(value, str) for key, value in self.prompts.items()):
            raise HcaeConfigError(
                f"prompts={self.prompts!r} is invalid: it must map prompt names to prefix strings, "
                f"for example {{'query': 'query: ', 'document': 'passage: '}}"
            )

    def _check_choice(self, name: str, allowed: tuple[str, ...]) -> None:
        value = getattr(self, name)
        if value not in allowed:
            raise HcaeConfigError(f"{name}={value!r} is invalid; allowed: {list(allowed)}")

    # ---- derived values ----

    @property
    def feed_forward_hidden_size(self) -> int:
        """Actual hidden width of each feed-forward layer."""
        if self.feed_forward == "swiglu":
            return swiglu_hidden_size(self.hidden_size, self.intermediate_size)
        return self.intermediate_size

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.hidden_size // self.num_attention_heads

    def layer_summary(self) -> str:
        """Return the stack in run-length form, for example ``"5 conv + 3 attn"``."""
        runs: list[list[Any]] = []
        for name in self.mixer_types:
            if runs and runs[-1][1] == name:
                runs[-1][0] += 1
            else:
                runs.append([1, name])
        return " + ".join(f"{count} {name}" for count, name in runs)


def _divisors_near(number: int, target: int) -> list[int]:
    divisors = [d for d in range(1, number + 1) if number % d == 0]
    return sorted(divisors, key=lambda d: abs(d - target))[:3]


__all__ = ["HcaeConfig", "HcaeConfigError", "expand_mixer_types", "swiglu_hidden_size"]
