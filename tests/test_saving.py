"""Save and reload: Hugging Face and sentence-transformers round trips in a fresh process, no pickle."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from hcae.embedding import build_sentence_transformer, load_tokenizer
from hcae.modeling import HcaeModel
from hcae.presets import build_config

TEXTS = ["A man is playing a guitar.", "Two dogs run across a snowy field near the trees."]

# run first in every child process: any unpickling attempt raises, so a pass proves loading never unpickles
NO_PICKLE = textwrap.dedent(
    """
    import pickle, sys
    import torch

    def _reject_unpickling(*args, **kwargs):
        raise AssertionError("loading tried to unpickle")

    class _RejectingUnpickler:
        def __init__(self, *args, **kwargs):
            _reject_unpickling()

    pickle.load = pickle.loads = _reject_unpickling
    pickle.Unpickler = _RejectingUnpickler
    torch.load = _reject_unpickling
    """
)


def _run_child(code: str, tmp_path: Path) -> dict:
    script = tmp_path / "child.py"
    script.write_text(NO_PICKLE + textwrap.dedent(code))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("preset", ["v1.0", "v1.1"])
def test_automodel_round_trip_fresh_process(preset, tmp_path):
    # full-size presets with fewer layers keep this fast while every toggle of the preset stays on
    config = build_config(preset, mixer_types="1 conv + 1 attn")
    torch.manual_seed(0)
    model = HcaeModel(config).eval()
    folder = tmp_path / "model"
    model.save_pretrained(folder)

    assert (folder / "model.safetensors").is_file()
    assert not list(folder.glob("*.bin"))
    assert not list(folder.glob("*.pt"))
    assert json.loads((folder / "config.json").read_text())["auto_map"]["AutoModel"] == "modeling_hcae.HcaeModel"

    tokenizer = load_tokenizer()
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model(batch["input_ids"], batch["attention_mask"]).pooler_output

    (tmp_path / "batch.json").write_text(json.dumps({key: value.tolist() for key, value in batch.items()}))
    reloaded = _run_child(
        f"""
        import json
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        batch = {{key: torch.tensor(value) for key, value in json.load(open("batch.json")).items()}}
        with torch.no_grad():
            pooled = model(batch["input_ids"], batch["attention_mask"]).pooler_output
        print(json.dumps({{"pooled": pooled.tolist(), "hcae_imported": "hcae" in sys.modules,
                          "module": type(model).__module__}}))
        """,
        tmp_path,
    )
    assert reloaded["hcae_imported"] is False
    assert reloaded["module"].startswith("transformers_modules.")
    assert torch.allclose(torch.tensor(reloaded["pooled"]), expected, atol=1e-6)


def test_sentence_transformer_round_trip_fresh_process(tmp_path):
    config = build_config("v1.1", mixer_types="1 conv + 1 attn")
    torch.manual_seed(0)
    folder = tmp_path / "embedder"
    embedder = build_sentence_transformer(config, folder=folder)

    assert embedder.prompts == {"query": "query: ", "document": "passage: "}
    expected_query = embedder.encode_query(TEXTS)
    expected_document = embedder.encode_document(TEXTS)
    # the prompt really changes the input: the query and document embeddings of one text differ
    assert abs(expected_query - expected_document).max() > 1e-4

    reloaded = _run_child(
        f"""
        import json
        from sentence_transformers import SentenceTransformer
        model = SentenceTransformer({str(folder)!r}, trust_remote_code=True)
        texts = {TEXTS!r}
        print(json.dumps({{"query": model.encode_query(texts).tolist(),
                          "document": model.encode_document(texts).tolist(),
                          "prompts": model.prompts, "hcae_imported": "hcae" in sys.modules}}))
        """,
        tmp_path,
    )
    assert reloaded["hcae_imported"] is False
    assert reloaded["prompts"] == {"query": "query: ", "document": "passage: "}
    assert torch.allclose(torch.tensor(reloaded["query"]), torch.tensor(expected_query), atol=1e-6)
    assert torch.allclose(torch.tensor(reloaded["document"]), torch.tensor(expected_document), atol=1e-6)


def test_sentence_transformer_without_prefixes(tmp_path):
    embedder = build_sentence_transformer(build_config("tiny"), folder=tmp_path / "embedder")
    # sentence-transformers fills in empty query and document prompts when none are given
    assert all(prefix == "" for prefix in embedder.prompts.values())
    assert torch.allclose(
        torch.tensor(embedder.encode_query(TEXTS)), torch.tensor(embedder.encode_document(TEXTS))
    )
