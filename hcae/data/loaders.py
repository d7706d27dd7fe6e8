"""Loaders for STS Benchmark, SICK, MRPC, SNLI, unlabelled sentences and SciFact, and the SciFact dev split."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset

from hcae.data.files import (
    FIX_HINT,
    STSB_SPLITS,
    FileSpec,
    check_row_count,
    is_id,
    is_text,
    one_of,
    open_dataset_file,
    read_jsonl,
    read_lines,
    row_error,
    score_in,
)
from hcae.errors import DataError, RunConfigError

# 200 of the 809 SciFact train queries (about a quarter) form the dev set. That gives a 95%
# bootstrap interval of about +-0.05 NDCG@10 (all-MiniLM-L6-v2), and about 600 remain for training.
SCIFACT_DEV_QUERIES = 200
SCIFACT_DEV_SEED = 0

NLI_LABELS = ("entailment", "neutral", "contradiction")


# ---------------------------------------------------------------------------------------------
# sentence pairs and unlabelled text


def load_stsb(split: str, data_dir: str | Path | None = None, *, normalize_scores: bool = False, verify: bool = True) -> Dataset:
    """Load an STS Benchmark split as columns ``sentence1``, ``sentence2``, ``score``.

    Scores are the gold similarities on the 0-5 scale, or divided by 5 with ``normalize_scores``
    (the range that CosineSimilarityLoss expects).
    """
    if split not in STSB_SPLITS:
        raise RunConfigError(f"Unknown STS Benchmark split {split!r}: valid splits are {', '.join(STSB_SPLITS)}.")
    path, spec = open_dataset_file(data_dir, f"stsb/{split}.jsonl", verify)
    rows = read_jsonl(path, spec, verify, {"sentence1": is_text, "sentence2": is_text, "score": score_in(0.0, 5.0)})
    scale = 5.0 if normalize_scores else 1.0
    return Dataset.from_dict({
        "sentence1": [row["sentence1"] for row in rows],
        "sentence2": [row["sentence2"] for row in rows],
        "score": [float(row["score"]) / scale for row in rows],
    })


def load_sick(split: str, data_dir: str | Path | None = None, *, verify: bool = True) -> Dataset:
    """Load SICK ``train`` (4500 pairs) or ``validation`` (the 500 trial pairs).

    Columns: ``sentence1``, ``sentence2``, ``score`` (relatedness 1-5) and ``label``
    (entailment, neutral or contradiction). The SemEval test pairs are not in the data folder.
    """
    if split not in ("train", "validation"):
        raise RunConfigError(f"Unknown SICK split {split!r}: valid splits are train, validation.")
    path, spec = open_dataset_file(data_dir, f"sick/{split}.jsonl", verify)
    fields = {"sentence1": is_text, "sentence2": is_text, "score": score_in(1.0, 5.0), "label": one_of(*NLI_LABELS)}
    rows = read_jsonl(path, spec, verify, fields)
    return Dataset.from_dict({name: [row[name] for row in rows] for name in fields})


def load_mrpc(data_dir: str | Path | None = None, *, verify: bool = True) -> Dataset:
    """Load the MRPC train split as columns ``sentence1``, ``sentence2``, ``label`` (1 = paraphrase)."""
    path, spec = open_dataset_file(data_dir, "mrpc/train.jsonl", verify)
    fields = {"sentence1": is_text, "sentence2": is_text, "label": one_of(0, 1)}
    rows = read_jsonl(path, spec, verify, fields)
    return Dataset.from_dict({name: [row[name] for row in rows] for name in fields})


def load_snli_triplets(data_dir: str | Path | None = None, *, verify: bool = True) -> Dataset:
    """Load SNLI triplets as columns ``anchor`` (premise), ``positive`` (an entailed hypothesis)
    and ``negative`` (a contradicting hypothesis).

    The 6541 triplets come from SNLI's dev and test splits and its 1% train sample. The file's
    ``split`` field is dropped, because the ranking losses would read it as another text column.
    """
    path, spec = open_dataset_file(data_dir, "nli/snli_triplets.jsonl.gz", verify)
    fields = {"anchor": is_text, "positive": is_text, "negative": is_text}
    rows = read_jsonl(path, spec, verify, fields)
    return Dataset.from_dict({name: [row[name] for row in rows] for name in fields})


def load_snli_pairs(data_dir: str | Path | None = None, *, verify: bool = True) -> Dataset:
    """Load labelled SNLI pairs as columns ``premise``, ``hypothesis``, ``label`` (entailment,
    neutral or contradiction); pairs without a gold label are not in the file."""
    path, spec = open_dataset_file(data_dir, "nli/snli_pairs.jsonl.gz", verify)
    fields = {"premise": is_text, "hypothesis": is_text, "label": one_of(*NLI_LABELS)}
    rows = read_jsonl(path, spec, verify, fields)
    return Dataset.from_dict({name: [row[name] for row in rows] for name in fields})


def load_unlabelled_sentences(
    data_dir: str | Path | None = None, *, include_scifact_corpus: bool = False, verify: bool = True
) -> Dataset:
    """Load unlabelled English sentences as columns ``text`` and ``source``.

    The default set contains 181862 sentences from NLTK corpora (Brown, State of the Union,
    inaugural addresses, movie reviews and others). ``include_scifact_corpus`` appends the 45952
    sentences of the SciFact abstracts with source ``scifact_corpus``. Those abstracts are the
    SciFact retrieval corpus itself, so training on them adapts the model to the test documents.
    """
    path, spec = open_dataset_file(data_dir, "sentences/unlabelled_en_nltk.jsonl.gz", verify)
    rows = read_jsonl(path, spec, verify, {"text": is_text, "source": is_text})
    texts = [row["text"] for row in rows]
    sources = [row["source"] for row in rows]
    if include_scifact_corpus:
        path, spec = open_dataset_file(data_dir, "sentences/scifact_corpus_sentences.jsonl.gz", verify)
        scifact_rows = read_jsonl(path, spec, verify, {"text": is_text, "doc_id": is_id})
        texts.extend(row["text"] for row in scifact_rows)
        sources.extend("scifact_corpus" for _ in scifact_rows)
    return Dataset.from_dict({"text": texts, "source": sources})


# ---------------------------------------------------------------------------------------------
# SciFact


def document_text(title: str, text: str) -> str:
    """Join a title and an abstract the way mteb 2.26 does before it encodes a retrieval document."""
    return f"{title} {text}".strip() if title else text.strip()


@dataclass(frozen=True)
class SciFactDocument:
    """One abstract of the SciFact corpus."""

    title: str
    text: str

    @property
    def full_text(self) -> str:
        """The text a retrieval model encodes: title and abstract joined as mteb joins them."""
        return document_text(self.title, self.text)


@dataclass(frozen=True)
class SciFactData:
    """The SciFact corpus, all 1109 claims, and the relevance judgments per split.

    ``qrels[split][query_id][doc_id]`` is the relevance (1) of a cited abstract, for split
    ``train`` (809 queries) or ``test`` (300 queries).
    """

    corpus: dict[str, SciFactDocument]
    queries: dict[str, str]
    qrels: dict[str, dict[str, dict[str, int]]]


def _read_qrels(path: Path, spec: FileSpec, verify: bool, corpus: dict[str, Any], queries: dict[str, str]) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    count = 0
    for line_number, line in read_lines(path):
        columns = line.split("\t")
        if line_number == 1:
            if columns != ["query-id", "corpus-id", "score"]:
                raise row_error(path, 1, f"expected the header 'query-id<TAB>corpus-id<TAB>score', found {line[:80]!r}")
            continue
        if len(columns) != 3 or not columns[2].strip().isdigit():
            raise row_error(path, line_number, f"expected 'query id<TAB>document id<TAB>integer score', found {line[:80]!r}")
        query_id, doc_id, score = columns[0], columns[1], int(columns[2])
        if query_id not in queries:
            raise row_error(path, line_number, f"query id {query_id!r} is not in scifact/queries.jsonl")
        if doc_id not in corpus:
            raise row_error(path, line_number, f"document id {doc_id!r} is not in scifact/corpus.jsonl.gz")
        qrels.setdefault(query_id, {})[doc_id] = score
        count += 1
    check_row_count(path, spec, count, verify)
    return qrels


def load_scifact(data_dir: str | Path | None = None, *, verify: bool = True) -> SciFactData:
    """Load the SciFact corpus, queries and train and test relevance judgments."""
    path, spec = open_dataset_file(data_dir, "scifact/corpus.jsonl.gz", verify)
    corpus_rows = read_jsonl(path, spec, verify, {"_id": is_id, "title": lambda v: isinstance(v, str), "text": is_text})
    corpus = {row["_id"]: SciFactDocument(title=row["title"], text=row["text"]) for row in corpus_rows}
    if len(corpus) != len(corpus_rows):
        raise DataError(f"Data file {path} repeats document ids. {FIX_HINT}")

    path, spec = open_dataset_file(data_dir, "scifact/queries.jsonl", verify)
    query_rows = read_jsonl(path, spec, verify, {"_id": is_id, "text": is_text})
    queries = {row["_id"]: row["text"] for row in query_rows}
    if len(queries) != len(query_rows):
        raise DataError(f"Data file {path} repeats query ids. {FIX_HINT}")

    qrels = {}
    for split in ("train", "test"):
        path, spec = open_dataset_file(data_dir, f"scifact/qrels/{split}.tsv", verify)
        qrels[split] = _read_qrels(path, spec, verify, corpus, queries)
    overlap = qrels["train"].keys() & qrels["test"].keys()
    if overlap:
        raise DataError(f"SciFact queries {sorted(overlap)[:5]} have judgments in both train and test qrels. {FIX_HINT}")
    return SciFactData(corpus=corpus, queries=queries, qrels=qrels)


@dataclass(frozen=True)
class SciFactTrainSplit:
    """SciFact train query ids divided into the dev slice, the training queries and the rest.

    ``duplicate_query_ids`` are train queries outside the dev slice whose claim text equals
    that of a dev query (SciFact repeats a few claims under two ids). They are neither dev nor
    training queries, so the dev claims never appear in training.
    """

    dev_query_ids: tuple[str, ...]
    train_query_ids: tuple[str, ...]
    duplicate_query_ids: tuple[str, ...] = ()


def _numeric_order(query_id: str) -> tuple[int, str]:
    return (int(query_id), query_id) if query_id.isdigit() else (-1, query_id)


def split_scifact_train_queries(
    query_ids: list[str] | tuple[str, ...] | set[str],
    dev_size: int = SCIFACT_DEV_QUERIES,
    seed: int = SCIFACT_DEV_SEED,
    query_texts: dict[str, str] | None = None,
) -> SciFactTrainSplit:
    """Divide SciFact train query ids into a dev slice of ``dev_size`` queries and the rest.

    Each id is ranked by the sha256 of ``"{seed}:{id}"`` and the lowest ``dev_size`` form the dev
    slice. The result depends only on the ids, the size and the seed, not on the input order or
    on Python's or NumPy's random number generators, and it stays the same across versions.
    With ``query_texts`` (id -> claim), a non-dev query whose text equals a dev query's text
    goes to ``duplicate_query_ids`` instead of ``train_query_ids``. All tuples are sorted by
    numeric id.
    """
    unique_ids = sorted(set(query_ids), key=_numeric_order)
    if not 0 < dev_size < len(unique_ids):
        raise RunConfigError(f"SciFact dev size must be between 1 and {len(unique_ids) - 1}, got {dev_size}.")
    ranked = sorted(unique_ids, key=lambda query_id: hashlib.sha256(f"{seed}:{query_id}".encode()).hexdigest())
    dev = set(ranked[:dev_size])
    dev_texts = {query_texts[query_id] for query_id in dev} if query_texts is not None else set()
    duplicates = {
        query_id for query_id in unique_ids if query_id not in dev and query_texts is not None and query_texts[query_id] in dev_texts
    }
    return SciFactTrainSplit(
        dev_query_ids=tuple(query_id for query_id in unique_ids if query_id in dev),
        train_query_ids=tuple(query_id for query_id in unique_ids if query_id not in dev and query_id not in duplicates),
        duplicate_query_ids=tuple(query_id for query_id in unique_ids if query_id in duplicates),
    )


def scifact_train_split(
    data: SciFactData, dev_size: int = SCIFACT_DEV_QUERIES, seed: int = SCIFACT_DEV_SEED
) -> SciFactTrainSplit:
    """Return the dev slice and the training queries of loaded SciFact data (see :class:`SciFactTrainSplit`)."""
    return split_scifact_train_queries(list(data.qrels["train"]), dev_size=dev_size, seed=seed, query_texts=data.queries)


def load_scifact_train_pairs(
    data_dir: str | Path | None = None,
    *,
    dev_size: int = SCIFACT_DEV_QUERIES,
    seed: int = SCIFACT_DEV_SEED,
    verify: bool = True,
) -> Dataset:
    """Load (claim, cited abstract) pairs of the SciFact train queries outside the dev slice.

    Columns: ``query`` (the claim) and ``document`` (title and abstract joined as mteb joins
    them), one row per relevant judgment. With the defaults, 608 queries remain: 200 form the dev
    slice and one repeats the claim of a dev query.
    """
    data = load_scifact(data_dir, verify=verify)
    split = scifact_train_split(data, dev_size=dev_size, seed=seed)
    queries, documents = [], []
    for query_id in split.train_query_ids:
        for doc_id, relevance in sorted(data.qrels["train"][query_id].items(), key=lambda item: _numeric_order(item[0])):
            if relevance > 0:
                queries.append(data.queries[query_id])
                documents.append(data.corpus[doc_id].full_text)
    return Dataset.from_dict({"query": queries, "document": documents})
