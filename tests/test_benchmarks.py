"""The FLOP counter, and the benchmark scripts run once on the tiny preset so they cannot rot.

The script runs use a handful of texts, one repeat and small matmuls: they check the wiring and
the results' structure, not the speed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import BertConfig, BertModel

from hcae.flops import (
    EncoderShape,
    FlopCount,
    forward_flops,
    linear_flops_per_token,
    padded_batch_forward_flops,
    real_tokens_forward_flops,
    training_flops,
)
from hcae.modeling import HcaeModel
from hcae.presets import PRESETS, build_config
from hcae.run_config import PROFILES

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import encode, profile_step, train  # noqa: E402


# ---- FLOP counter: small cases counted by hand ----


def test_flops_conv_layer_by_hand():
    # d=8, kernel 3, GELU width 16, 5 tokens. Per token: pointwise 2*8*8 = 128,
    # feed-forward 2*8*16 + 2*16*8 = 512, depthwise 2*3*8 = 48.
    shape = EncoderShape(hidden_size=8, mixer_types=("conv",), feed_forward="gelu", feed_forward_hidden_size=16, conv_kernel_size=3)
    count = forward_flops(shape, 5)
    assert count.linear == 5 * (128 + 512)
    assert count.conv == 5 * 48
    assert count.attention == 0
    assert count.total == 3440


def test_flops_attention_layer_by_hand():
    # d=8, GELU width 16, 5 tokens. Per token: QKV 2*8*24 = 384, output 2*8*8 = 128,
    # feed-forward 512. Per sequence: QK^T 2*5*5*8 = 400 and AV 400.
    shape = EncoderShape(hidden_size=8, mixer_types=("attn",), feed_forward="gelu", feed_forward_hidden_size=16)
    count = forward_flops(shape, 5)
    assert count.linear == 5 * (384 + 128 + 512)
    assert count.attention == 800
    assert count.conv == 0


def test_flops_swiglu_by_hand():
    # d=8, SwiGLU width 6, kernel 3, 2 tokens. Per token: pointwise 128, gate and up 2 * 2*8*6,
    # down 2*6*8: 288 for the feed-forward; depthwise 48.
    shape = EncoderShape(hidden_size=8, mixer_types=("conv",), feed_forward="swiglu", feed_forward_hidden_size=6, conv_kernel_size=3)
    count = forward_flops(shape, 2)
    assert count.linear == 2 * (128 + 288)
    assert count.conv == 2 * 48


def test_flops_padding_and_training():
    shape = EncoderShape(hidden_size=8, mixer_types=("conv", "attn"), feed_forward="gelu", feed_forward_hidden_size=16, conv_kernel_size=3)
    padded = padded_batch_forward_flops(shape, batch_size=2, padded_length=5)
    real = real_tokens_forward_flops(shape, [3, 5])
    assert padded == forward_flops(shape, 5) * 2
    assert real == forward_flops(shape, 3) + forward_flops(shape, 5)
    assert real.total < padded.total
    assert training_flops(real) == real * 3
    assert FlopCount(1, 2, 3).to_dict() == {"linear": 1, "attention": 2, "conv": 3, "total": 6}


def test_flops_rejects_invalid_input():
    with pytest.raises(ValueError, match="unknown mixer"):
        EncoderShape(hidden_size=8, mixer_types=("rnn",), feed_forward="gelu", feed_forward_hidden_size=16)
    with pytest.raises(ValueError, match="feed_forward"):
        EncoderShape(hidden_size=8, mixer_types=("attn",), feed_forward="relu", feed_forward_hidden_size=16)
    shape = EncoderShape(hidden_size=8, mixer_types=("attn",), feed_forward="gelu", feed_forward_hidden_size=16)
    with pytest.raises(ValueError, match="length"):
        forward_flops(shape, -1)
    with pytest.raises(ValueError, match="model_type"):
        EncoderShape.from_config(PRESETS)


def test_flops_shape_from_configs():
    config = build_config("v1.1")
    shape = EncoderShape.from_config(config)
    assert shape.mixer_types == ("conv",) * 4 + ("attn",) * 4
    assert shape.feed_forward == "swiglu"
    assert shape.feed_forward_hidden_size == config.feed_forward_hidden_size
    assert shape.conv_kernel_size == config.conv_kernel_size

    bert = EncoderShape.from_config(BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536))
    assert bert.mixer_types == ("attn",) * 6
    assert bert.feed_forward == "gelu"
    assert bert.feed_forward_hidden_size == 1536


def test_flops_linear_matches_weight_count():
    # every matrix entry of a linear layer is one multiply-add per token
    config = build_config("tiny", feed_forward="swiglu")
    model = HcaeModel(config)
    weights = sum(module.weight.numel() for module in model.modules() if isinstance(module, torch.nn.Linear))
    assert linear_flops_per_token(EncoderShape.from_config(config)) == 2 * weights


def _counted_flops(model: torch.nn.Module, batch_size: int, length: int, **inputs: torch.Tensor) -> int:
    # On the meta device attention decomposes into bmm, which FlopCounterMode counts. On the CPU
    # it runs as a fused kernel that FlopCounterMode (torch 2.13) does not count.
    counter = FlopCounterMode(display=False)
    with counter:
        model(torch.zeros(batch_size, length, dtype=torch.long, device="meta"), **inputs)
    return counter.get_total_flops()


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_flops_match_torch_counter_on_presets(preset):
    config = build_config(preset)
    with torch.device("meta"):
        model = HcaeModel(config).eval()
    counted = _counted_flops(model, 2, 24, attention_mask=torch.ones(2, 24, dtype=torch.long, device="meta"))
    assert padded_batch_forward_flops(EncoderShape.from_config(config), 2, 24).total == counted


def test_flops_match_torch_counter_on_bert():
    config = BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, vocab_size=100)
    with torch.device("meta"):
        model = BertModel(config, add_pooling_layer=False).eval()
    assert padded_batch_forward_flops(EncoderShape.from_config(config), 2, 16).total == _counted_flops(model, 2, 16)


# ---- the scripts, once each on the tiny preset ----


@pytest.fixture(scope="module")
def restore_threads():
    """Undo the scripts' thread settings after this module."""
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAYON_NUM_THREADS", "1")
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def encode_results(data_dir, tmp_path_factory, restore_threads):
    out = tmp_path_factory.mktemp("encode") / "encode.json"
    status = encode.main([
        "--models", "tiny", "minilm", "--limit", "6", "--repeats", "1", "--warmup", "0", "--threads", "1",
        "--no-memory", "--data-dir", str(data_dir), "--out", str(out),
    ])
    assert status == 0
    return json.loads(out.read_text())


def test_encode_results_structure(encode_results):
    assert encode_results["benchmark"] == "encode"
    assert encode_results["machine"]["threads"] == 1
    assert encode_results["machine"]["torch"] == torch.__version__
    assert encode_results["machine"]["cpu_model"]
    assert encode_results["settings"]["reference"] == "minilm"
    assert set(encode_results["models"]) == {"tiny", "minilm"}
    assert encode_results["models"]["tiny"]["weights"] == "random"

    rows = encode_results["results"]
    combinations = {(row["model"], row["dataset"], row["precision"]) for row in rows}
    assert len(rows) == 8
    assert len(combinations) == 8
    for row in rows:
        assert row["texts"] == 6
        assert len(row["model_seconds"]) == 1
        assert row["texts_per_second"]["median"] > 0
        assert row["end_to_end_texts_per_second"] < row["texts_per_second"]["median"]
        assert row["real_tokens"] <= row["padded_tokens"]
        assert row["max_length"] <= 256
        assert row["forward_flops_padded"]["total"] >= row["forward_flops_real_tokens"]["total"]
        assert row["memory"] is None


def test_encode_reference_ratio_is_one(encode_results):
    for row in encode_results["results"]:
        if row["model"] == "minilm":
            assert row["ratio_to_reference"] == 1.0
            assert row["end_to_end_ratio_to_reference"] == 1.0
        else:
            assert row["ratio_to_reference"] > 0


def test_encode_same_tokens_for_all_models(encode_results):
    # the tiny preset uses all-MiniLM-L6-v2's tokenizer, so both encode the same token ids
    by_workload: dict[tuple[str, str], set[tuple[int, int]]] = {}
    for row in encode_results["results"]:
        by_workload.setdefault((row["dataset"], row["precision"]), set()).add((row["real_tokens"], row["padded_tokens"]))
    assert all(len(counts) == 1 for counts in by_workload.values())


def test_encode_memory_in_fresh_process(data_dir, tmp_path, restore_threads):
    out = tmp_path / "memory.json"
    status = encode.main([
        "--models", "tiny", "--datasets", "scifact", "--precisions", "float32", "--limit", "4", "--batch-size", "2",
        "--repeats", "1", "--warmup", "0", "--threads", "1", "--data-dir", str(data_dir), "--out", str(out),
    ])
    assert status == 0
    (row,) = json.loads(out.read_text())["results"]
    memory = row["memory"]
    assert memory["measured_batches"] == 2
    assert memory["model_rss_mib"] > 0
    assert memory["encode_rss_increase_mib"] >= 0
    assert memory["peak_rss_mib"] >= memory["baseline_rss_mib"]


def test_encode_rejects_unknown_preset(capsys):
    assert encode.main(["--models", "v9.9", "--no-memory"]) == 2
    assert "unknown model 'v9.9'" in capsys.readouterr().err


def test_encode_rejects_missing_data_folder(tmp_path, capsys, restore_threads):
    status = encode.main(["--models", "tiny", "--no-memory", "--threads", "1", "--data-dir", str(tmp_path / "absent")])
    assert status == 2
    assert "data folder" in capsys.readouterr().err


@pytest.fixture(scope="module")
def train_results(data_dir, tmp_path_factory, restore_threads):
    out = tmp_path_factory.mktemp("train") / "train.json"
    # the smoke profile's batch shape (16 texts, 64 tokens) keeps this run to seconds
    status = train.main([
        "--models", "tiny", "minilm", "--run-profile", "smoke", "--steps", "1", "--repeats", "1", "--warmup", "0",
        "--threads", "1", "--peak-size", "128", "--peak-repeats", "1", "--data-dir", str(data_dir), "--out", str(out),
    ])
    assert status == 0
    return json.loads(out.read_text())


def test_train_batch_shape_from_profile(train_results):
    distill = PROFILES["smoke"]["training"]["distill"]
    settings = train_results["settings"]
    assert settings["batch_size"] == distill["batch_size"]
    assert settings["max_seq_length"] == distill["max_seq_length"]
    for row in train_results["results"]:
        assert row["batch_sizes"] == [distill["batch_size"]]
        assert max(row["padded_lengths"]) <= distill["max_seq_length"]


def test_train_results_structure(train_results):
    assert train_results["benchmark"] == "train"
    assert train_results["machine"]["threads"] == 1
    assert set(train_results["matmul_peak"]) == {"float32", "bf16"}
    assert train_results["matmul_peak"]["bf16"]["dtype"] == "bfloat16"
    for peak in train_results["matmul_peak"].values():
        assert peak["flops_per_second"] == max(peak["flops_per_second_before"], peak["flops_per_second_after"])

    rows = train_results["results"]
    assert len(rows) == 8
    for row in rows:
        assert row["real_tokens"] <= row["padded_tokens"]
        assert row["real_tokens_per_second"]["median"] > 0
        assert row["padded_tokens_per_second"] >= row["real_tokens_per_second"]["median"]
        assert 0 < row["fraction_of_peak_real_tokens"] <= row["fraction_of_peak"]
        assert row["training_flops_padded"]["total"] >= row["training_flops_real_tokens"]["total"]


def test_train_flops_are_three_forward_passes(train_results):
    shape = EncoderShape.from_config(build_config("tiny"))
    row = next(row for row in train_results["results"] if row["model"] == "tiny" and row["workload"] == "abstracts")
    forward = padded_batch_forward_flops(shape, row["batch_sizes"][0], row["padded_lengths"][0])
    assert row["training_flops_padded"]["total"] == 3 * forward.total


def test_train_reference_ratio_is_one(train_results):
    for row in train_results["results"]:
        if row["model"] == "minilm":
            assert row["ratio_to_reference"] == 1.0


def test_train_rejects_unknown_profile(capsys):
    assert train.main(["--models", "tiny", "--run-profile", "huge"]) == 2
    assert "--run-profile 'huge' is invalid" in capsys.readouterr().err


def test_profile_step_lists_operations(tmp_path, restore_threads):
    out = tmp_path / "profile.json"
    status = profile_step.main([
        "--model", "tiny", "--batch-size", "2", "--seq-length", "8", "--top", "5", "--threads", "1", "--out", str(out),
    ])
    assert status == 0
    results = json.loads(out.read_text())
    assert len(results["top_operations"]) == 5
    assert set(results["range_ms"]) == {"forward", "backward"}
    shares = [operation["self_cpu_share"] for operation in results["top_operations"]]
    assert shares == sorted(shares, reverse=True)
