"""The training recipe on sentence-transformers' trainer: initialise, distil, then contrastive.

Stage 1 (distill) regresses the student's embedding onto the teacher's with a cosine distance
(`EmbedDistillLoss`), on unlabelled sentences, pseudo-passages and SciFact training abstracts. It
replaces the large-corpus pre-training that cannot run offline. Stage 2 (contrastive) trains
with in-batch negatives (`MultipleNegativesRankingLoss`) on SNLI triplets and SciFact claim ->
abstract pairs, and with `CoSENTLoss` on STS Benchmark train, taking one batch of each set in turn.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.base.sampler import MultiDatasetBatchSamplers
from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator
from transformers import TrainerCallback, set_seed

from hcae import data as hcae_data
from hcae.embedding import load_tokenizer, to_sentence_transformer
from hcae.errors import RunConfigError
from hcae.modeling import HcaeModel
from hcae.run_config import RunConfig
from hcae.tracking import NullTracker, Tracker
from hcae.training.datasets import contrastive_datasets, contrastive_losses, distillation_dataset, load_teacher
from hcae.training.sampler import LengthBucketBatchSampler

logger = logging.getLogger(__name__)

DEV_EVALUATOR_NAME = "sts-dev"


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


def copy_teacher_embeddings(student: HcaeModel, teacher: SentenceTransformer) -> list[str]:
    """Copy token and position embeddings (and the embedding LayerNorm) from a BERT-like teacher.

    BERT adds the segment-0 token-type embedding to every token, so it is folded into the copied
    position embeddings. Returns the names of what was copied.

    Raises:
        RunConfigError: if the teacher's vocabulary or width differs from the student's.
    """
    source = teacher[0].model.embeddings
    target = student.embeddings
    words = source.word_embeddings.weight
    if words.shape != target.word_embeddings.weight.shape:
        raise RunConfigError(
            f"training.init=teacher needs the teacher's vocabulary and width: the teacher has "
            f"{tuple(words.shape)}, the student {tuple(target.word_embeddings.weight.shape)}; use training.init: random"
        )

    copied = ["word_embeddings"]
    with torch.no_grad():
        target.word_embeddings.weight.copy_(words)
        positions = min(source.position_embeddings.weight.shape[0], target.position_embeddings.weight.shape[0])
        position_weights = source.position_embeddings.weight[:positions].clone()
        if hasattr(source, "token_type_embeddings"):
            position_weights += source.token_type_embeddings.weight[0]
            copied.append("token_type_embeddings[0] (added to positions)")
        target.position_embeddings.weight[:positions].copy_(position_weights)
        copied.append(f"position_embeddings[:{positions}]")

        norm = getattr(source, "LayerNorm", None)
        if norm is not None and isinstance(target.norm, torch.nn.LayerNorm):
            target.norm.weight.copy_(norm.weight)
            target.norm.bias.copy_(norm.bias)
            copied.append("embedding LayerNorm")
    return copied


class HcaeTrainer(SentenceTransformerTrainer):
    """sentence-transformers' trainer with weight decay on matrices, kernels and embeddings only."""

    def get_decay_parameter_names(self, model: torch.nn.Module) -> list[str]:
        # biases, norm scales and LayerScale vectors are the 1-D parameters. Decaying a LayerScale
        # vector would pull its residual branch back toward zero, against what it is there for.
        return [name for name, parameter in model.named_parameters() if parameter.ndim >= 2]


class TrackingCallback(TrainerCallback):
    """Send the trainer's logs to a tracker, stop on a NaN loss and report dev scores for pruning.

    Args:
        tracker: where metrics go.
        stage: ``distill`` or ``contrastive``, the prefix of the metric names.
        step_offset: steps of earlier stages, so that both stages share one step axis.
        batch_size: texts per step, for the throughput.
        reporter: called with (dev STS-B Spearman, global step) after each dev evaluation.
    """

    def __init__(
        self,
        tracker: Tracker,
        stage: str,
        step_offset: int,
        batch_size: int,
        reporter: Callable[[float, int], None] | None,
    ) -> None:
        self.tracker = tracker
        self.stage = stage
        self.step_offset = step_offset
        self.batch_size = batch_size
        self.reporter = reporter
        self.last_time = time.perf_counter()
        self.last_step = 0
        self.curve: list[tuple[int, float]] = []

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        logs = logs or {}
        step = self.step_offset + state.global_step
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(loss):
            raise TrainingDiverged(f"{self.stage} loss is {loss} at step {step}; lower the learning rate")

        now = time.perf_counter()
        metrics = {}
        if loss is not None:
            metrics[f"train/{self.stage}_loss"] = loss
            metrics["train/loss"] = loss
            if state.global_step > self.last_step:
                metrics["train/samples_per_second"] = (
                    (state.global_step - self.last_step) * self.batch_size / max(now - self.last_time, 1e-9)
                )
            self.last_time, self.last_step = now, state.global_step
        if "learning_rate" in logs:
            metrics["train/learning_rate"] = logs["learning_rate"]
        if "grad_norm" in logs:
            metrics["train/grad_norm"] = logs["grad_norm"]
        if metrics:
            self.tracker.log_metrics(metrics, step=step)

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None, **kwargs: Any) -> None:
        key = f"eval_{DEV_EVALUATOR_NAME}_spearman_cosine"
        if not metrics or key not in metrics:
            return
        step = self.step_offset + state.global_step
        value = float(metrics[key])
        self.curve.append((step, value))
        self.tracker.log_metrics({"dev/stsb_spearman_during_training": value}, step=step)
        logger.info("step %d: dev STS-B Spearman %.4f", step, value)
        if self.reporter is not None:
            self.reporter(value, step)
        # evaluation time is not training time
        self.last_time = time.perf_counter()


def _dev_evaluator(run: RunConfig) -> EmbeddingSimilarityEvaluator:
    validation = hcae_data.load_stsb("validation", run.data_dir)
    return EmbeddingSimilarityEvaluator(
        validation["sentence1"], validation["sentence2"], validation["score"],
        batch_size=128, main_similarity="cosine", similarity_fn_names=["cosine"],
        name=DEV_EVALUATOR_NAME, write_csv=False,
    )


def bf16_supported() -> bool:
    """Return whether this machine runs bf16 natively: a CUDA GPU with bf16, or a CPU with AVX512-BF16 or AMX."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_bf16(setting: bool | str) -> bool:
    """Turn the ``training.bf16`` setting (auto, true or false) into a decision."""
    return bf16_supported() if setting == "auto" else bool(setting)


def _training_arguments(run: RunConfig, stage: Any, scratch: Path, prompts: dict[str, Any] | None) -> SentenceTransformerTrainingArguments:
    training = run.training
    evaluate = training.dev_eval_steps > 0
    return SentenceTransformerTrainingArguments(
        output_dir=str(scratch),
        max_steps=stage.steps,
        per_device_train_batch_size=stage.batch_size,
        learning_rate=stage.learning_rate,
        warmup_steps=math.ceil(stage.warmup_ratio * stage.steps),
        lr_scheduler_type="linear",
        weight_decay=training.weight_decay,
        max_grad_norm=training.max_grad_norm,
        # bf16 autocast on a CPU needs use_cpu as well; weights and optimizer state stay float32.
        # NOTE: the GPU branch (use_cpu False) has not been run on a GPU machine.
        bf16=resolve_bf16(training.bf16),
        use_cpu=not torch.cuda.is_available(),
        seed=run.seed,
        data_seed=run.seed,
        logging_steps=training.logging_steps,
        # by default transformers logs the mean of earlier losses in place of a NaN, which would
        # hide a diverged run from the NaN check in TrackingCallback
        logging_nan_inf_filter=False,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=training.dev_eval_steps if evaluate else None,
        save_strategy="no",
        report_to="none",
        batch_sampler=LengthBucketBatchSampler,
        multi_dataset_batch_sampler=MultiDatasetBatchSamplers.ROUND_ROBIN,
        prompts=prompts,
        dataloader_num_workers=0,
    )


def build_static_student(run: RunConfig) -> tuple[SentenceTransformer, dict[str, Any]]:
    """Build a `StaticEmbedding` student: a mean-pooled bag of token vectors over the BERT-base-uncased
    vocabulary, started from the teacher's token embeddings or from a seeded normal draw."""
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding

    set_seed(run.seed)
    tokenizer = load_tokenizer()
    info: dict[str, Any] = {"init": run.training.init}
    if run.training.init == "teacher":
        teacher = load_teacher(run.training.teacher)
        weights = teacher[0].model.embeddings.word_embeddings.weight.detach().clone()
        info["copied"] = ["word_embeddings"]
    else:
        weights = torch.randn(len(tokenizer), 384) * 0.02
    static = StaticEmbedding(tokenizer, embedding_weights=weights)
    embedder = SentenceTransformer(modules=[static])
    embedder.model_card_data.model_name = run.display_name()
    return embedder, info


def _set_max_seq_length(embedder: SentenceTransformer, length: int) -> None:
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding

    # a StaticEmbedding bag has no position limit, and its max_seq_length is read-only
    if not isinstance(embedder[0], StaticEmbedding):
        embedder.max_seq_length = length


def build_student(run: RunConfig) -> tuple[SentenceTransformer, dict[str, Any]]:
    """Build the randomly initialised student (seeded) and copy the teacher's embeddings if asked."""
    if run.architecture == "static":
        return build_static_student(run)
    set_seed(run.seed)
    config = run.model_config()
    model = HcaeModel(config)
    info: dict[str, Any] = {"init": run.training.init}
    if run.training.init == "teacher":
        teacher = load_teacher(run.training.teacher)
        info["copied"] = copy_teacher_embeddings(model, teacher)
    embedder = to_sentence_transformer(model, load_tokenizer())
    embedder.model_card_data.model_name = run.display_name()
    return embedder, info


def train(
    run: RunConfig,
    tracker: Tracker | None = None,
    reporter: Callable[[float, int], None] | None = None,
) -> tuple[SentenceTransformer, dict[str, Any]]:
    """Train a student as the run config specifies.

    Args:
        run: the run config.
        tracker: receives per-step loss, learning rate, gradient norm, throughput and dev scores.
        reporter: called with (dev STS-B Spearman, global step) after each dev evaluation; it may
            raise (for example ``optuna.TrialPruned``) to stop the run.

    Returns:
        The trained model and a summary: seconds per stage, data sources, the dev curve.

    Raises:
        TrainingDiverged: if a loss becomes NaN or infinite.
    """
    tracker = tracker or NullTracker()
    summary: dict[str, Any] = {"stages": {}}
    started = time.perf_counter()

    embedder, summary["init"] = build_student(run)
    summary["bf16"] = resolve_bf16(run.training.bf16)
    summary["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    evaluator = _dev_evaluator(run) if run.training.dev_eval_steps > 0 else None
    step_offset = 0
    curve: list[tuple[int, float]] = []

    with tempfile.TemporaryDirectory(prefix="hcae-trainer-") as scratch:
        if run.training.distill.enabled:
            stage = run.training.distill
            teacher = load_teacher(run.training.teacher)
            dataset, sources = distillation_dataset(run, teacher)
            teacher_width = teacher.get_embedding_dimension()
            del teacher
            from sentence_transformers.sentence_transformer.losses import EmbedDistillLoss

            _set_max_seq_length(embedder, stage.max_seq_length)
            callback = TrackingCallback(tracker, "distill", step_offset, stage.batch_size, reporter)
            stage_started = time.perf_counter()
            trainer = HcaeTrainer(
                model=embedder,
                args=_training_arguments(run, stage, Path(scratch) / "distill", None),
                train_dataset=dataset,
                # a student narrower or wider than the teacher learns a linear map into its space,
                # which lives on the loss and is not saved with the model
                loss=EmbedDistillLoss(
                    embedder,
                    distance_metric="cosine",
                    projection_dim=None if teacher_width == embedder.get_embedding_dimension() else teacher_width,
                ),
                evaluator=evaluator,
                callbacks=[callback],
            )
            trainer.train()
            summary["stages"]["distill"] = {
                "steps": stage.steps, "seconds": time.perf_counter() - stage_started, "sources": sources,
            }
            step_offset += stage.steps
            curve.extend(callback.curve)

        if run.training.contrastive.enabled:
            stage = run.training.contrastive
            datasets = contrastive_datasets(run)
            prompts = None
            model_prompts = embedder.prompts or {}
            if "scifact" in datasets and model_prompts.get("query"):
                # with prefixes on, claims are queries and abstracts are passages, as at evaluation
                prompts = {"scifact": {"query": model_prompts["query"], "document": model_prompts.get("document", "")}}
            _set_max_seq_length(embedder, stage.max_seq_length)
            callback = TrackingCallback(tracker, "contrastive", step_offset, stage.batch_size, reporter)
            stage_started = time.perf_counter()
            trainer = HcaeTrainer(
                model=embedder,
                args=_training_arguments(run, stage, Path(scratch) / "contrastive", prompts),
                train_dataset=datasets,
                loss=contrastive_losses(embedder, list(datasets)),
                evaluator=evaluator,
                callbacks=[callback],
            )
            trainer.train()
            summary["stages"]["contrastive"] = {
                "steps": stage.steps,
                "seconds": time.perf_counter() - stage_started,
                "sources": {name: len(dataset) for name, dataset in datasets.items()},
                "prompts": prompts,
            }
            step_offset += stage.steps
            curve.extend(callback.curve)

    _set_max_seq_length(embedder, max(run.training.distill.max_seq_length, run.training.contrastive.max_seq_length))
    embedder.eval()
    summary["train_seconds"] = time.perf_counter() - started
    summary["dev_curve"] = curve
    return embedder, summary
