"""mteb's STSBenchmark and SciFact tasks, reading the local data folder and keeping per-item scores.

Both classes subclass the tasks that ship with mteb 2.26, so the evaluators, metrics and result
files are mteb's own. Only the data source changes: ``load_data`` takes prepared splits instead
of the hub, and the task metadata records the data folder and a digest of its files as the
dataset path and revision.

Per-item scores are recorded while mteb scores each split, for bootstrap intervals and paired
comparisons between models:

- STSBenchmark: per pair, the cosine similarity of the two embeddings and the gold score (0-5).
  Their Spearman correlation is mteb's ``cosine_spearman``.
- SciFact: per query, NDCG@10 and Recall@10 from pytrec_eval and MRR@10, the values whose means
  mteb reports (mteb rounds those means to 5 decimals).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict
from mteb._evaluators.retrieval_metrics import mrr as mteb_mrr
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
from mteb.tasks.retrieval.eng.sci_fact_retrieval import SciFact
from mteb.tasks.sts.eng.sts_benchmark_sts import STSBenchmarkSTS

from hcae import data as hcae_data

logger = logging.getLogger(__name__)

# hcae split name -> split name inside the mteb task and its result files
STSB_SPLITS = {"dev": "validation", "test": "test"}
SCIFACT_SPLITS = {"dev": "dev", "test": "test"}


class LocalSTSBenchmark(STSBenchmarkSTS):
    """mteb's STSBenchmark task on in-memory splits with columns sentence1, sentence2, score (0-5).

    Args:
        splits: mteb split name (``validation``, ``test``) -> pairs.
        data_path: where the data came from, stored as the dataset path in mteb's metadata.
        data_revision: digest of the data files, stored as the dataset revision.
    """

    def __init__(self, splits: dict[str, Dataset], *, data_path: str, data_revision: str) -> None:
        super().__init__()
        self.metadata = STSBenchmarkSTS.metadata.model_copy(
            update={"dataset": {"path": data_path, "revision": data_revision}, "eval_splits": list(splits)}
        )
        self.local_splits = splits
        # mteb split name -> {"cosine": [...], "gold": [...]}, filled during evaluation
        self.per_item: dict[str, dict[str, list[float]]] = {}
        self._split_in_progress: str | None = None

    def check_if_dataset_is_superseded(self) -> None:
        # STSBenchmark.v2 drops duplicate pairs; hcae reports v1 on purpose because the MTEB
        # leaderboard scores that the harness is checked against are v1 scores
        logger.debug("evaluating STSBenchmark (v1) although mteb marks it superseded by STSBenchmark.v2")

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        self.dataset = {"default": DatasetDict(self.local_splits)}
        self.data_loaded = True

    def _evaluate_subset(self, model: Any, data_split: Dataset, *, hf_split: str, **kwargs: Any) -> Any:
        self._split_in_progress = hf_split
        self.per_item[hf_split] = {"cosine": [], "gold": [float(score) for score in data_split["score"]]}
        return super()._evaluate_subset(model, data_split, hf_split=hf_split, **kwargs)

    def _calculate_scores(self, scores: Any, normalized_scores: list[float]) -> Any:
        self.per_item[self._split_in_progress]["cosine"] = [float(value) for value in scores["cosine_scores"]]
        return super()._calculate_scores(scores, normalized_scores)


class LocalSciFact(SciFact):
    """mteb's SciFact task on in-memory splits that share one corpus Dataset.

    Args:
        splits: mteb split name (``dev``, ``test``) -> corpus, queries and relevance judgments.
        data_path: where the data came from, stored as the dataset path in mteb's metadata.
        data_revision: digest of the data files, stored as the dataset revision.
    """

    def __init__(self, splits: dict[str, RetrievalSplitData], *, data_path: str, data_revision: str) -> None:
        super().__init__()
        self.metadata = SciFact.metadata.model_copy(
            update={"dataset": {"path": data_path, "revision": data_revision}, "eval_splits": list(splits)}
        )
        self.local_splits = splits
        # mteb split name -> {"query_ids": [...], "ndcg_at_10": [...], ...}, filled during evaluation
        self.per_item: dict[str, dict[str, list[Any]]] = {}

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        # copies of the split dicts, because mteb filters queries and qrels in place
        self.dataset = {"default": {split: RetrievalSplitData(**data) for split, data in self.local_splits.items()}}
        self.data_loaded = True

    def task_specific_scores(
        self,
        scores: dict[str, dict[str, float]],
        qrels: dict[str, dict[str, int]],
        results: dict[str, dict[str, float]],
        hf_split: str,
        hf_subset: str,
    ) -> dict[str, float]:
        # `scores` contains pytrec_eval's per-query metrics. mteb averages NDCG and recall over
        # these queries and MRR over the queries in `results`, which are the same set.
        query_ids = list(scores)
        reciprocal_ranks = mteb_mrr({q: qrels[q] for q in query_ids}, {q: results[q] for q in query_ids}, [10])
        self.per_item[hf_split] = {
            "query_ids": query_ids,
            "ndcg_at_10": [float(scores[q]["ndcg_cut_10"]) for q in query_ids],
            "recall_at_10": [float(scores[q]["recall_10"]) for q in query_ids],
            "mrr_at_10": [float(value) for value in reciprocal_ranks["MRR@10"]],
        }
        return {}


def build_stsb_task(
    splits: list[str], data_dir: Path, *, verify: bool = True, data_revision: str | None = None
) -> LocalSTSBenchmark:
    """Build the STSBenchmark task for hcae splits ``dev`` (validation) and ``test``."""
    local_splits = {STSB_SPLITS[split]: hcae_data.load_stsb(STSB_SPLITS[split], data_dir, verify=verify) for split in splits}
    revision = data_revision or hcae_data.data_fingerprint([f"stsb/{STSB_SPLITS[split]}.jsonl" for split in splits], data_dir)
    return LocalSTSBenchmark(local_splits, data_path=str(data_dir / "stsb"), data_revision=revision)


def scifact_split_data(
    data: hcae_data.SciFactData, query_ids: list[str] | tuple[str, ...], qrels: dict[str, dict[str, int]], corpus: Dataset
) -> RetrievalSplitData:
    """Return one retrieval split: the given queries (in file order), their judgments, the full corpus."""
    selected = set(query_ids)
    ordered_ids = [query_id for query_id in data.queries if query_id in selected]
    queries = Dataset.from_dict({"id": ordered_ids, "text": [data.queries[query_id] for query_id in ordered_ids]})
    relevant_docs = {query_id: dict(qrels[query_id]) for query_id in ordered_ids}
    return RetrievalSplitData(corpus=corpus, queries=queries, relevant_docs=relevant_docs, top_ranked=None)


def scifact_corpus_dataset(data: hcae_data.SciFactData) -> Dataset:
    """Return the corpus as the Dataset (id, title, text) that mteb's retrieval tasks read."""
    ids = list(data.corpus)
    return Dataset.from_dict({
        "id": ids,
        "title": [data.corpus[doc_id].title for doc_id in ids],
        "text": [data.corpus[doc_id].text for doc_id in ids],
    })


def build_scifact_task(
    splits: list[str],
    data_dir: Path,
    *,
    dev_size: int = hcae_data.SCIFACT_DEV_QUERIES,
    dev_seed: int = hcae_data.SCIFACT_DEV_SEED,
    verify: bool = True,
    data_revision: str | None = None,
) -> LocalSciFact:
    """Build the SciFact task for hcae splits ``dev`` and ``test``.

    ``test`` is MTEB's split: the 300 test claims against the full corpus. ``dev`` is the seeded
    slice of ``dev_size`` train claims with their train judgments, also against the full corpus.
    Both splits share one corpus Dataset.
    """
    data = hcae_data.load_scifact(data_dir, verify=verify)
    corpus = scifact_corpus_dataset(data)
    local_splits = {}
    for split in splits:
        if split == "test":
            local_splits["test"] = scifact_split_data(data, list(data.qrels["test"]), data.qrels["test"], corpus)
        else:
            dev_ids = hcae_data.scifact_train_split(data, dev_size=dev_size, seed=dev_seed).dev_query_ids
            local_splits[SCIFACT_SPLITS[split]] = scifact_split_data(data, dev_ids, data.qrels["train"], corpus)
    revision = data_revision or hcae_data.data_fingerprint(list(hcae_data.load_manifest()["scifact"].files), data_dir)
    if "dev" in splits:
        # a different dev slice is different data
        revision = f"{revision}-dev{dev_size}-seed{dev_seed}"
    return LocalSciFact(local_splits, data_path=str(data_dir / "scifact"), data_revision=revision)
