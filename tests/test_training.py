"""The training recipe: sampler, teacher initialisation and cache, data choice, repeatability,
divergence handling and MLflow tracking, on the real data with the smoke profile."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from datasets import Dataset

from hcae import data as hcae_data
from hcae.modeling import HcaeModel
from hcae.presets import build_config
from hcae.run_config import build_run_config
from hcae.tracking import TrackingStore
from hcae.training import TrainingDiverged, copy_teacher_embeddings, run_tracked, train_and_evaluate
from hcae.training import datasets as training_datasets
from hcae.training.sampler import LengthBucketBatchSampler


@pytest.fixture(scope="module")
def teacher():
    return training_datasets.load_teacher("all-MiniLM-L6-v2")


def _smoke(data_dir, **sections):
    values = {"profile": "smoke", "data_dir": str(data_dir), "model": {"preset": "v1.1"}}
    values.update(sections)
    return build_run_config(values)


# ---- sampler ----


def _texts(count: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return ["word " * int(length) for length in rng.integers(1, 60, size=count)]


def test_sampler_covers_each_row_once():
    dataset = Dataset.from_dict({"text": [f"{text}{index}" for index, text in enumerate(_texts(1000))]})
    sampler = LengthBucketBatchSampler(dataset, batch_size=32, drop_last=False, seed=3)
    batches = list(sampler)
    flat = [index for batch in batches for index in batch]
    assert sorted(flat) == list(range(1000))
    assert max(len(batch) for batch in batches) == 32


def test_sampler_pads_less_than_random():
    dataset = Dataset.from_dict({"text": [f"{text}{index}" for index, text in enumerate(_texts(2048))]})
    lengths = [len(text) for text in dataset["text"]]
    sampler = LengthBucketBatchSampler(dataset, batch_size=64, drop_last=False, seed=0)
    bucketed = np.mean([max(lengths[i] for i in batch) for batch in sampler])
    order = np.random.default_rng(0).permutation(2048)
    random_batches = [order[start : start + 64] for start in range(0, 2048, 64)]
    unsorted = np.mean([max(lengths[i] for i in batch) for batch in random_batches])
    assert bucketed < 0.6 * unsorted


def test_sampler_keeps_duplicates_apart():
    anchors = [f"premise {index // 4}" for index in range(512)]
    dataset = Dataset.from_dict({"anchor": anchors, "positive": [f"hypothesis {index}" for index in range(512)]})
    sampler = LengthBucketBatchSampler(dataset, batch_size=32, drop_last=False, seed=0)
    batches = list(sampler)
    for batch in batches:
        batch_anchors = [anchors[index] for index in batch]
        assert len(batch_anchors) == len(set(batch_anchors))
    assert sorted(index for batch in batches for index in batch) == list(range(512))


def test_sampler_seed_and_epoch_change_order():
    dataset = Dataset.from_dict({"text": [f"{text}{index}" for index, text in enumerate(_texts(500))]})
    first = list(LengthBucketBatchSampler(dataset, batch_size=16, drop_last=False, seed=1))
    again = list(LengthBucketBatchSampler(dataset, batch_size=16, drop_last=False, seed=1))
    assert first == again
    sampler = LengthBucketBatchSampler(dataset, batch_size=16, drop_last=False, seed=1)
    sampler.set_epoch(1)
    assert list(sampler) != first


# ---- teacher initialisation and cache ----


def test_teacher_copy_matches_teacher(teacher):
    student = HcaeModel(build_config("v1.0", mixer_types="1 conv + 1 attn"))
    copied = copy_teacher_embeddings(student, teacher)
    source = teacher[0].model.embeddings
    assert torch.equal(student.embeddings.word_embeddings.weight, source.word_embeddings.weight)
    expected_positions = source.position_embeddings.weight + source.token_type_embeddings.weight[0]
    assert torch.allclose(student.embeddings.position_embeddings.weight, expected_positions)
    assert torch.equal(student.embeddings.norm.weight, source.LayerNorm.weight)
    assert "embedding LayerNorm" in copied


def test_teacher_copy_rejects_other_width(teacher):
    student = HcaeModel(build_config("tiny"))
    with pytest.raises(Exception, match="use training.init: random"):
        copy_teacher_embeddings(student, teacher)


def test_teacher_embeddings_cached(teacher, tmp_path, monkeypatch):
    monkeypatch.setenv(hcae_data.CACHE_DIR_ENV, str(tmp_path))
    texts = ["A cat sits on the mat.", "Stock markets fell sharply today."]
    first = training_datasets.teacher_embeddings(teacher, "all-MiniLM-L6-v2", texts, bf16=False)
    assert first.shape == (2, 384)
    assert np.allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    assert len(list((tmp_path / "teacher").glob("*.safetensors"))) == 1

    def fail_encode(*args, **kwargs):
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(teacher, "encode", fail_encode)
    again = training_datasets.teacher_embeddings(teacher, "all-MiniLM-L6-v2", texts, bf16=False)
    assert np.array_equal(first, again)
    with pytest.raises(AssertionError, match="the cache was not used"):
        training_datasets.teacher_embeddings(teacher, "all-MiniLM-L6-v2", texts + ["new text"], bf16=False)


# ---- data choice ----


def test_distillation_texts_ignore_seed(data_dir):
    first, counts = training_datasets.distillation_texts(_smoke(data_dir, seed=0))
    second, _ = training_datasets.distillation_texts(_smoke(data_dir, seed=7))
    assert first == second
    assert counts == {"sentences": 256, "passages": 16}


def test_scifact_eval_corpus_only_when_switched_on(data_dir):
    off, counts_off = training_datasets.distillation_texts(_smoke(data_dir))
    switched = {"distill": {"use_scifact_eval_corpus": True}}
    on, counts_on = training_datasets.distillation_texts(_smoke(data_dir, training=switched))
    assert "scifact_eval_corpus_sentences" not in counts_off
    assert counts_on["scifact_eval_corpus_sentences"] > 40000
    assert len(on) == len(off) + counts_on["scifact_eval_corpus_sentences"]


def test_scifact_training_abstracts_exclude_held_out(data_dir):
    abstracts = set(training_datasets.scifact_training_abstracts(data_dir))
    scifact = hcae_data.load_scifact(data_dir)
    split = hcae_data.scifact_train_split(scifact)
    held_out = {doc for judgments in scifact.qrels["test"].values() for doc in judgments}
    held_out |= {doc for query in split.dev_query_ids for doc in scifact.qrels["train"][query]}
    held_out_texts = {scifact.corpus[doc].full_text for doc in held_out}
    assert len(abstracts) > 200
    assert not abstracts & held_out_texts


# ---- whole runs on the smoke profile ----


def test_smoke_run_repeatable(data_dir, tmp_path):
    run = _smoke(data_dir, seed=3)
    first = train_and_evaluate(run, tmp_path / "first")
    second = train_and_evaluate(run, tmp_path / "second")
    for key in ("dev/stsb_spearman", "dev/scifact_ndcg_at_10", "test/stsb_spearman", "test/scifact_ndcg_at_10"):
        assert first[key] == second[key], key
    assert (tmp_path / "first" / "model" / "model.safetensors").is_file()
    results = json.loads((tmp_path / "first" / "eval" / "results.json").read_text())
    assert len(results["tasks"]["STSBenchmark"]["splits"]["test"]["per_item"]["cosine"]) == 1379


def test_other_seed_other_result(data_dir, tmp_path):
    first = train_and_evaluate(_smoke(data_dir, seed=0), tmp_path / "a")
    second = train_and_evaluate(_smoke(data_dir, seed=1), tmp_path / "b")
    assert first["dev/stsb_spearman"] != second["dev/stsb_spearman"]


def test_nan_loss_fails_run_in_mlflow(data_dir, tmp_path, monkeypatch):
    from sentence_transformers.sentence_transformer.losses import EmbedDistillLoss

    original = EmbedDistillLoss.forward

    def nan_forward(self, *args, **kwargs):
        return original(self, *args, **kwargs) * float("nan")

    monkeypatch.setattr(EmbedDistillLoss, "forward", nan_forward)
    store = TrackingStore(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with pytest.raises(TrainingDiverged, match="loss is nan"):
        run_tracked(_smoke(data_dir), store, tmp_path / "run")

    [run] = store.find_runs("")
    assert run.info.status == "FAILED"
    assert run.data.tags["hcae.error"].startswith("TrainingDiverged")
    assert not (tmp_path / "run" / "model").exists()
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_tracked_run_logs_everything(data_dir, tmp_path):
    store = TrackingStore(f"sqlite:///{tmp_path / 'mlflow.db'}")
    started = []
    metrics = run_tracked(_smoke(data_dir), store, tmp_path / "run", on_start=started.append)
    [run] = store.find_runs("")
    assert started == [run.info.run_id]
    assert run.info.status == "FINISHED"
    assert run.data.params["model.preset"] == "v1.1"
    assert run.data.params["training.distill.use_scifact_eval_corpus"] == "False"
    assert run.data.tags["hcae.git_commit"]
    assert run.data.tags["hcae.version.torch"].startswith("2.13")
    assert run.data.metrics["test/stsb_spearman"] == pytest.approx(metrics["test/stsb_spearman"])
    assert math.isfinite(run.data.metrics["test/scifact_ndcg_at_10_ci_high"])
    history = store.client.get_metric_history(run.info.run_id, "train/loss")
    assert len(history) >= 4
    assert {"learning_rate", "grad_norm"} <= {key.split("/")[-1] for key in run.data.metrics}
    artifacts = {item.path for item in store.client.list_artifacts(run.info.run_id)}
    assert {"model", "eval", "run.yaml"} <= artifacts
    model_files = {item.path for item in store.client.list_artifacts(run.info.run_id, "model")}
    assert "model/model.safetensors" in model_files


def test_tracked_run_nests_under_active_run(data_dir, tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    store = TrackingStore(uri)
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run(experiment_id=store.experiment_id) as outer:
            run_tracked(_smoke(data_dir, training={"contrastive": {"enabled": False}}), store, tmp_path / "run")
    finally:
        mlflow.set_tracking_uri("")
    child = [run for run in store.find_runs("") if run.info.run_id != outer.info.run_id]
    assert len(child) == 1
    assert child[0].data.tags["mlflow.parentRunId"] == outer.info.run_id


def test_train_command_rejects_bad_config(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("profile: smoke\ntraining:\n  distil:\n    steps: 3\n")
    result = subprocess.run([sys.executable, "-m", "hcae.cli", "train", str(config)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "unknown key 'training.distil'" in result.stderr


def test_no_weight_decay_on_vectors(data_dir):
    from hcae.training.recipe import HcaeTrainer, build_student

    embedder, _ = build_student(_smoke(data_dir))
    names = HcaeTrainer.get_decay_parameter_names(None, embedder)
    assert any(name.endswith("qkv.weight") for name in names)
    assert any(name.endswith("word_embeddings.weight") for name in names)
    assert not any("gamma" in name or name.endswith("bias") or "norm" in name for name in names)
