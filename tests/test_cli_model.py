"""The ``hcae describe`` and ``hcae build`` commands, run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hcae.cli import main


def _hcae(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hcae.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.mark.parametrize("preset", ["v1.0", "v1.1"])
def test_describe_prints_counts(preset, capsys):
    assert main(["describe", preset]) == 0
    printed = capsys.readouterr().out
    assert "total params" in printed
    assert "token embeddings" in printed
    assert "conv mixers" in printed
    assert "attn mixers" in printed


def test_describe_json_keys(capsys):
    assert main(["describe", "v1.1", "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["total_params"] == 21205408
    assert counts["embedding_params"] == 30522 * 384
    assert counts["by_mixer"]["attn"]["layers"] == 4


def test_describe_yaml_with_model_section(tmp_path, capsys):
    config = tmp_path / "variant.yaml"
    config.write_text("model:\n  preset: v1.0\n  mixer_types: 4 x (conv attn)\n  conv_kernel_size: 5\n")
    assert main(["describe", str(config), "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["mixer_types"] == ["conv", "attn"] * 4


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("model:\n  preset: v1.0\n  feed_forward: relu\n", "feed_forward='relu' is invalid; allowed: ['gelu', 'swiglu']"),
        ("model: [1, 2\n", "is not valid YAML"),
        ("model:\n  preset: v2\n", "unknown preset 'v2'"),
        ("model:\n  kernel: 3\n", "unknown model field 'kernel'"),
    ],
)
def test_describe_bad_config_exits_2(tmp_path, content, message):
    config = tmp_path / "bad.yaml"
    config.write_text(content)
    result = _hcae("describe", str(config))
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_describe_missing_file_exits_2():
    result = _hcae("describe", "no/such/config.yaml")
    assert result.returncode == 2
    assert "neither a preset" in result.stderr


def test_build_writes_loadable_folder(tmp_path):
    out = tmp_path / "tiny-model"
    result = _hcae("build", "tiny", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("config.json", "model.safetensors", "modeling_hcae.py", "modules.json", "tokenizer.json"):
        assert (out / name).is_file(), name

    check = subprocess.run(
        [sys.executable, "-c",
         "import sys; from transformers import AutoModel; "
         f"m = AutoModel.from_pretrained({str(out)!r}, trust_remote_code=True); "
         "print(type(m).__name__, 'hcae' in sys.modules)"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    assert check.returncode == 0, check.stderr[-2000:]
    assert check.stdout.split()[-2:] == ["HcaeModel", "False"]


def test_build_refuses_non_empty_folder(tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    result = _hcae("build", "tiny", "--out", str(out))
    assert result.returncode == 2
    assert "already exists" in result.stderr
    assert (out / "keep.txt").read_text() == "user data"
