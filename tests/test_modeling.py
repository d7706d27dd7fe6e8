"""The HCAE encoder: every building block and toggle, padding invariance and parameter counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hcae.embedding import load_tokenizer
from hcae.inspection import count_parameters
from hcae.modeling import HcaeConfig, HcaeConfigError, HcaeModel, expand_mixer_types, swiglu_hidden_size
from hcae.modeling.conv_mixer import DepthwiseSeparableConvMixer
from hcae.modeling.layer_scale import LayerScale
from hcae.presets import PRESETS, build_config

TINY = {
    "hidden_size": 32,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "conv_kernel_size": 3,
    "max_position_embeddings": 160,
    "mixer_types": "2 conv + 2 attn",
}

SENTENCE = "A man is playing a guitar on the street corner."


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def _tiny(**overrides) -> HcaeConfig:
    return HcaeConfig(**{**TINY, **overrides})


def _forward_backward(config: HcaeConfig) -> None:
    torch.manual_seed(0)
    model = HcaeModel(config)
    input_ids = torch.randint(1, config.vocab_size, (3, 11))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 7:] = 0
    output = model(input_ids, attention_mask)

    assert output.last_hidden_state.shape == (3, 11, config.hidden_size)
    assert output.pooler_output.shape == (3, config.hidden_size)
    assert torch.isfinite(output.pooler_output).all()

    output.pooler_output.square().sum().backward()
    missing = [name for name, parameter in model.named_parameters() if parameter.grad is None]
    assert missing == [], f"parameters without gradient: {missing}"


@pytest.mark.parametrize(
    "overrides",
    [
        {"mixer_types": "3 conv"},
        {"mixer_types": "3 attn"},
        {"mixer_types": "2 x (attn conv)"},
        {"feed_forward": "swiglu"},
        {"norm": "rmsnorm"},
        {"layer_scale_init": 0.1},
        {"pooling": "cls"},
        {"pooling": "max"},
        {"conv_kernel_size": 5},
        {"prompts": {"query": "query: ", "document": "passage: "}},
        {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0},
    ],
    ids=lambda overrides: ",".join(f"{key}={value}" for key, value in overrides.items()),
)
def test_variant_forward_backward(overrides):
    _forward_backward(_tiny(**overrides))


def test_layer_scale_off_is_absent():
    model = HcaeModel(_tiny(layer_scale_init=None))
    assert not any(isinstance(module, LayerScale) for module in model.modules())
    assert isinstance(model.layers[0].mixer_scale, nn.Identity)


def test_layer_scale_on_starts_at_init():
    model = HcaeModel(_tiny(layer_scale_init=1e-5))
    scales = [module for module in model.modules() if isinstance(module, LayerScale)]
    assert len(scales) == 2 * len(model.layers)
    for scale in scales:
        assert torch.allclose(scale.gamma, torch.full_like(scale.gamma, 1e-5))


def test_mixer_order_follows_config():
    model = HcaeModel(_tiny(mixer_types=["attn", "conv", "attn"]))
    assert [block.mixer_type for block in model.layers] == ["attn", "conv", "attn"]
    assert isinstance(model.layers[1].mixer, DepthwiseSeparableConvMixer)


def test_swiglu_matches_gelu_parameters():
    gelu = count_parameters(_tiny(feed_forward="gelu", intermediate_size=96))
    swiglu = count_parameters(_tiny(feed_forward="swiglu", intermediate_size=96))
    hidden = TINY["hidden_size"]
    # one SwiGLU hidden unit costs 3*d + 2 parameters, so rounding the width leaves at most half of that
    per_unit = 3 * hidden + 2
    per_layer_gap = abs(gelu["feed_forward_params"] - swiglu["feed_forward_params"]) / len(gelu["layers"])
    assert per_layer_gap <= per_unit / 2
    assert swiglu_hidden_size(384, 1024) == 682


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("5 conv + 3 attn", ["conv"] * 5 + ["attn"] * 3),
        ("4 x (conv attn)", ["conv", "attn"] * 4),
        ("conv, attn, conv", ["conv", "attn", "conv"]),
        ("2x conv + attn", ["conv", "conv", "attn"]),
        (["CONV", "attn"], ["conv", "attn"]),
    ],
)
def test_mixer_shorthand_expands(spec, expected):
    assert expand_mixer_types(spec) == expected
    assert HcaeConfig(mixer_types=spec).mixer_types == expected


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"mixer_types": "4 conv + 4 mamba"}, "unknown mixer 'mamba'"),
        ({"mixer_types": "4 conv +"}, "cannot parse the term ''"),
        ({"mixer_types": []}, "describes no layers"),
        ({"feed_forward": "relu"}, "feed_forward='relu' is invalid; allowed: ['gelu', 'swiglu']"),
        ({"norm": "batchnorm"}, "norm='batchnorm' is invalid; allowed: ['layernorm', 'rmsnorm']"),
        ({"pooling": "sum"}, "pooling='sum' is invalid; allowed: ['mean', 'cls', 'max']"),
        ({"conv_kernel_size": 4}, "conv_kernel_size=4 is invalid: it must be odd"),
        ({"num_attention_heads": 5}, "num_attention_heads=5 does not divide hidden_size=32"),
        ({"layer_scale_init": -1.0}, "layer_scale_init=-1.0 is invalid"),
        ({"layer_scale_init": "small"}, "layer_scale_init='small' is invalid"),
        ({"hidden_size": 0}, "hidden_size=0 is invalid"),
        ({"hidden_dropout_prob": 1.5}, "hidden_dropout_prob=1.5 is invalid"),
        ({"num_hidden_layers": 3}, "num_hidden_layers=3 does not match the 4 entries"),
        ({"prompts": {"query": 1}}, "prompts={'query': 1} is invalid"),
    ],
)
def test_invalid_config_raises(overrides, message):
    with pytest.raises(HcaeConfigError) as caught:
        _tiny(**overrides)
    assert message in str(caught.value)


def test_build_config_rejects_unknowns():
    with pytest.raises(HcaeConfigError, match="unknown preset 'v9'"):
        build_config("v9")
    with pytest.raises(HcaeConfigError, match="unknown model field 'kernel'"):
        build_config("tiny", kernel=3)
    with pytest.raises(HcaeConfigError, match="prefixes='yes' is invalid"):
        build_config("tiny", prefixes="yes")


def test_prefixes_shorthand_sets_prompts():
    assert build_config("v1.0", prefixes=True).prompts == {"query": "query: ", "document": "passage: "}
    assert build_config("v1.1", prefixes=False).prompts == {}


def _embed_alone_and_padded(model: HcaeModel, tokenizer, length: int = 128):
    """Return the sentence's token states and pooled output alone, and inside a batch padded to ``length``."""
    alone = tokenizer([SENTENCE], return_tensors="pt")
    batch = tokenizer([SENTENCE, "short", "word " * 200], padding="max_length", truncation=True,
                      max_length=length, return_tensors="pt")
    real = alone["input_ids"].shape[1]
    assert batch["attention_mask"][0].sum() == real
    with torch.no_grad():
        single = model(alone["input_ids"], alone["attention_mask"])
        padded = model(batch["input_ids"], batch["attention_mask"])
    states = (single.last_hidden_state[0], padded.last_hidden_state[0, :real])
    pooled = (single.pooler_output[0], padded.pooler_output[0])
    return states, pooled


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_padding_invariance(preset, tokenizer):
    torch.manual_seed(0)
    model = HcaeModel(build_config(preset)).eval()
    (states_alone, states_padded), (pooled_alone, pooled_padded) = _embed_alone_and_padded(model, tokenizer)
    assert (states_alone - states_padded).abs().max().item() <= 1e-5
    assert (pooled_alone - pooled_padded).abs().max().item() <= 1e-5


@pytest.mark.parametrize("pooling", ["mean", "max", "cls"])
def test_padding_invariance_per_pooling(pooling, tokenizer):
    torch.manual_seed(0)
    model = HcaeModel(build_config("tiny", pooling=pooling)).eval()
    _, (pooled_alone, pooled_padded) = _embed_alone_and_padded(model, tokenizer)
    assert (pooled_alone - pooled_padded).abs().max().item() <= 1e-5


def test_padding_check_detects_leak(tokenizer, monkeypatch):
    """The invariance check fails when the convolution reads padded positions."""

    def leaky_forward(self, hidden_states, token_mask):
        mixed = self.depthwise(hidden_states.transpose(1, 2))
        return self.pointwise(mixed.transpose(1, 2))

    monkeypatch.setattr(DepthwiseSeparableConvMixer, "forward", leaky_forward)
    torch.manual_seed(0)
    model = HcaeModel(build_config("tiny")).eval()
    _, (pooled_alone, pooled_padded) = _embed_alone_and_padded(model, tokenizer)
    assert (pooled_alone - pooled_padded).abs().max().item() > 1e-5


def test_too_long_input_raises():
    model = HcaeModel(_tiny(max_position_embeddings=8))
    with pytest.raises(ValueError, match="longer than max_position_embeddings=8"):
        model(torch.ones(1, 9, dtype=torch.long))


def test_preset_parameter_counts():
    v10 = count_parameters(build_config("v1.0"))
    v11 = count_parameters(build_config("v1.1"))
    attn8 = count_parameters(build_config("attn8"))
    assert 20.5e6 <= v10["total_params"] <= 21.5e6
    assert abs(v11["total_params"] - 21.1e6) <= 0.02 * 21.1e6
    assert abs(attn8["total_params"] - v11["total_params"]) <= 0.001 * v11["total_params"]
    assert v10["embedding_params"] == 30522 * 384
    assert v10["by_mixer"]["conv"]["layers"] == 5
    assert v10["by_mixer"]["attn"]["layers"] == 3
    assert v11["by_mixer"]["conv"]["layers"] == 4


def test_parameter_count_matches_model():
    config = build_config("tiny", feed_forward="swiglu", layer_scale_init=1e-4)
    model = HcaeModel(config)
    counts = count_parameters(config)
    assert counts["total_params"] == sum(parameter.numel() for parameter in model.parameters())
    assert sum(layer["params"] for layer in counts["layers"]) == sum(
        parameter.numel() for parameter in model.layers.parameters()
    )
