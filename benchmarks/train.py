"""Training throughput of HCAE presets and all-MiniLM-L6-v2 on the CPU, and its share of the
machine's matrix-multiply peak.

The full benchmark (run it on an idle machine; about 30 minutes on 2 cores by an estimate):

    python benchmarks/train.py --out benchmarks/results/train.json

A wiring check in seconds:

    python benchmarks/train.py --models tiny minilm --batch-size 4 --max-seq-length 32 --steps 1 \\
        --repeats 1 --warmup 0 --peak-size 256 --out /tmp/train.json

The data folder, with ``sentences/`` and ``scifact/``, is ``--data-dir``, else ``$HCAE_DATA_DIR``, else ``./data``.

Exit status: 0 on success, 2 on an invalid option or missing data.

What runs:

- Batch shape: the ``distill`` stage of a run-config profile (``--run-profile``, default
  ``quick``): its batch size (64) and truncation length (256 tokens). ``--batch-size`` and
  ``--max-seq-length`` override them.
- Workloads, both with that batch shape: ``sentences`` are batches of unlabelled English
  sentences drawn by the training recipe's `LengthBucketBatchSampler`. They are short and pad
  little, and they are the bulk of distillation. ``abstracts`` are batches of SciFact training
  abstracts, which nearly all fill the 256 tokens: the long end of the recipe's texts.
- One step: the forward pass through the sentence-transformers model (transformer and pooling),
  an MSE loss against fixed random target embeddings (the distillation loss against cached
  teacher embeddings), the backward pass, gradient clipping at the run config's
  ``max_grad_norm`` and a fused AdamW step (the default optimizer of the transformers trainer
  for torch >= 2.8). In train mode, so dropout is active. In float32, or with the forward pass
  and loss under ``torch.autocast("cpu", dtype=torch.bfloat16)`` as the trainer does with
  ``bf16=True``, with weights and optimizer state in float32.
- Repeats: a repeat runs ``--steps`` batches (the same ones for every model); every repeat runs
  each model in turn. Throughputs are medians over ``--repeats`` repeats after ``--warmup``
  untimed repeats. A ratio divides a model's median real tokens per second by
  all-MiniLM-L6-v2's, so above 1 means faster than all-MiniLM-L6-v2.
- Tokens: real tokens are the attention-mask ones (special tokens included); padded tokens are
  batch size times padded length, the positions the model computes.
- FLOPs: `hcae.flops` counts them from the model shapes; training is three forward passes. The
  achieved FLOP/s divides the padded-batch FLOPs by the step time, and its fraction of peak
  divides that by the matrix-multiply peak of the same run. The peak is the FLOP/s of a
  ``--peak-size`` square ``torch.mm`` (median time of ``--peak-repeats`` products) in float32,
  and in bfloat16 for the bf16 runs, measured before and after the training runs, and the higher
  of the two counts. It is what PyTorch's kernels reach on this machine, not the CPU's
  datasheet figure.
- Presets have random weights (seeded): speed does not depend on weight values.
"""

from __future__ import annotations

import argparse
import gc
import logging
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # run as `python benchmarks/train.py`: make the repository root importable for benchmarks.common
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from datasets import Dataset  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

from benchmarks.common import (  # noqa: E402
    DEFAULT_MODELS,
    PRECISIONS,
    REFERENCE_MODEL,
    BenchmarkError,
    BenchmarkModel,
    apply_threads,
    check_data_folder,
    check_model_names,
    configure_logging,
    format_number,
    format_ratio,
    load_average,
    load_models,
    machine_info,
    markdown_table,
    ratio,
    summarise,
    warn_if_busy,
    write_json,
)
from hcae import data as hcae_data  # noqa: E402
from hcae.errors import HcaeError  # noqa: E402
from hcae.flops import FlopCount, padded_batch_forward_flops, real_tokens_forward_flops, training_flops  # noqa: E402
from hcae.modeling import HcaeConfigError  # noqa: E402
from hcae.run_config import PROFILES, RunConfig, build_run_config  # noqa: E402
from hcae.training.datasets import scifact_training_abstracts  # noqa: E402
from hcae.training.sampler import BUCKET_BATCHES, LengthBucketBatchSampler  # noqa: E402

logger = logging.getLogger("benchmarks.train")

WORKLOADS = ("sentences", "abstracts")
# seed of the sentence sample, the batch order and the target embeddings
DATA_SEED = 0
DEFAULT_STEPS = 3
DEFAULT_PEAK_SIZE = 4096


# ---- batches ----


@dataclass
class TrainingBatch:
    """One tokenized batch with its token counts."""

    features: dict[str, Any]
    lengths: list[int]
    padded_length: int

    @property
    def size(self) -> int:
        """Number of texts."""
        return len(self.lengths)


def sentence_batches(data_dir: Path, batch_size: int, steps: int) -> list[list[str]]:
    """Draw ``steps`` batches of unlabelled sentences the way the training recipe batches them.

    A sample of ``batch_size * BUCKET_BATCHES`` sentences is one bucketing window of
    `LengthBucketBatchSampler`: it is sorted by length, cut into batches and shuffled.
    """
    sentences = hcae_data.load_unlabelled_sentences(data_dir)["text"]
    window = batch_size * BUCKET_BATCHES
    if len(sentences) < window:
        raise BenchmarkError(f"the unlabelled sentence set has {len(sentences)} sentences, fewer than {window}")
    sample = random.Random(DATA_SEED).sample(sentences, window)
    sampler = LengthBucketBatchSampler(Dataset.from_dict({"text": sample}), batch_size, drop_last=True, seed=DATA_SEED)
    batches = [[sample[index] for index in indices] for indices in sampler]
    if len(batches) < steps:
        raise BenchmarkError(f"--steps {steps} is invalid: the sentence window yields only {len(batches)} batches")
    return batches[:steps]


def abstract_batches(data_dir: Path, batch_size: int, steps: int) -> list[list[str]]:
    """Return ``steps`` consecutive batches of SciFact training abstracts, wrapping around at the end."""
    abstracts = scifact_training_abstracts(data_dir)
    if len(abstracts) < batch_size * steps:
        logger.warning(
            "only %d SciFact training abstracts for %d steps of %d: some abstracts repeat",
            len(abstracts), steps, batch_size,
        )
    return [[abstracts[(step * batch_size + row) % len(abstracts)] for row in range(batch_size)] for step in range(steps)]


def tokenize_batches(embedder: SentenceTransformer, batch_texts: list[list[str]]) -> list[TrainingBatch]:
    """Tokenize batches with the model's tokenizer and truncation."""
    batches = []
    for texts in batch_texts:
        features = embedder.preprocess(texts)
        lengths = [int(count) for count in features["attention_mask"].sum(dim=1).tolist()]
        batches.append(TrainingBatch(features, lengths, int(features["input_ids"].shape[1])))
    return batches


# ---- peak matrix-multiply throughput ----


def measure_matmul_peak(size: int, dtype: torch.dtype, repeats: int) -> dict[str, Any]:
    """Time a ``(size, size) @ (size, size)`` product and return its median FLOP/s (``2 * size**3`` per product)."""
    generator = torch.Generator().manual_seed(DATA_SEED)
    left = torch.randn(size, size, generator=generator).to(dtype)
    right = torch.randn(size, size, generator=generator).to(dtype)
    product = torch.empty(size, size, dtype=dtype)
    torch.mm(left, right, out=product)

    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(left, right, out=product)
        seconds.append(time.perf_counter() - start)
    median = summarise(seconds)["median"]
    return {"size": size, "dtype": str(dtype).removeprefix("torch."), "seconds": seconds, "flops_per_second": 2 * size**3 / median}


def measure_matmul_peaks(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Measure the matmul peak in every precision of the run, by precision name."""
    peaks = {}
    for precision in args.precisions:
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        peaks[precision] = measure_matmul_peak(args.peak_size, dtype, args.peak_repeats)
        logger.info("matmul peak %s: %.1f GFLOP/s", precision, peaks[precision]["flops_per_second"] / 1e9)
    return peaks


def combine_peaks(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Return the higher of the peaks measured before and after the training runs, by precision.

    Other processes can only slow the measurement down, so the higher one is the better estimate.
    """
    combined = {}
    for precision, first in before.items():
        second = after[precision]
        combined[precision] = {
            "size": first["size"],
            "dtype": first["dtype"],
            "flops_per_second": max(first["flops_per_second"], second["flops_per_second"]),
            "flops_per_second_before": first["flops_per_second"],
            "flops_per_second_after": second["flops_per_second"],
            "seconds_before": first["seconds"],
            "seconds_after": second["seconds"],
        }
    return combined


def warn_if_above_peak(rows: list[dict[str, Any]]) -> None:
    """Log a warning for results faster than the measured peak, which only a disturbed peak measurement explains."""
    for row in rows:
        if row["fraction_of_peak"] is not None and row["fraction_of_peak"] > 1:
            logger.warning(
                "%s %s %s reached %.0f%% of the measured matmul peak: the peak measurement was disturbed, "
                "so the fractions of peak are unreliable; rerun on an idle machine",
                row["model"], row["workload"], row["precision"], row["fraction_of_peak"] * 100,
            )


# ---- training steps ----


@dataclass
class Trainee:
    """A model with its optimizer and one fixed target embedding per batch row."""

    model: BenchmarkModel
    optimizer: torch.optim.Optimizer
    parameters: list[torch.nn.Parameter]
    targets: dict[str, list[torch.Tensor]]


def make_trainee(model: BenchmarkModel, batches: dict[str, list[TrainingBatch]], run: RunConfig) -> Trainee:
    """Put a model in train mode and give it a fused AdamW with the run config's settings."""
    model.embedder.train()
    parameters = [parameter for parameter in model.embedder.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(
        parameters, lr=run.training.distill.learning_rate, weight_decay=run.training.weight_decay, fused=True
    )
    dimension = model.embedder.get_embedding_dimension()
    generator = torch.Generator().manual_seed(DATA_SEED)
    targets = {
        workload: [F.normalize(torch.randn(batch.size, dimension, generator=generator), dim=-1) for batch in items]
        for workload, items in batches.items()
    }
    return Trainee(model, optimizer, parameters, targets)


def train_step(trainee: Trainee, batch: TrainingBatch, target: torch.Tensor, bf16: bool, max_grad_norm: float) -> None:
    """Run one forward pass, MSE loss, backward pass, gradient clipping and optimizer step."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        # the forward pass adds its outputs to the dict it receives, so give it a copy
        embeddings = trainee.model.embedder(dict(batch.features))["sentence_embedding"]
        loss = F.mse_loss(embeddings.float(), target)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(trainee.parameters, max_grad_norm)
    trainee.optimizer.step()
    trainee.optimizer.zero_grad(set_to_none=True)


def time_repeat(trainee: Trainee, workload: str, batches: list[TrainingBatch], bf16: bool, max_grad_norm: float) -> list[float]:
    """Run every batch once and return the seconds of each step."""
    gc.collect()
    seconds = []
    for batch, target in zip(batches, trainee.targets[workload]):
        start = time.perf_counter()
        train_step(trainee, batch, target, bf16, max_grad_norm)
        seconds.append(time.perf_counter() - start)
    return seconds


def measure_training(
    trainees: list[Trainee], batches: dict[tuple[str, str], list[TrainingBatch]], args: argparse.Namespace, run: RunConfig
) -> dict[tuple[str, str, str], list[list[float]]]:
    """Time every model on every workload and precision, models interleaved within each repeat.

    Returns the step times by (model, workload, precision): one list of step seconds per repeat.
    """
    max_grad_norm = run.training.max_grad_norm
    times: dict[tuple[str, str, str], list[list[float]]] = {}
    for workload in args.workloads:
        for precision in args.precisions:
            bf16 = precision == "bf16"
            for trainee in trainees:
                name = trainee.model.name
                for warmup in range(args.warmup):
                    seconds = sum(time_repeat(trainee, workload, batches[name, workload], bf16, max_grad_norm))
                    logger.info("%s %s warm-up %d/%d %s: %.2f s", workload, precision, warmup + 1, args.warmup, name, seconds)

            for repeat in range(args.repeats):
                for trainee in trainees:
                    name = trainee.model.name
                    step_seconds = time_repeat(trainee, workload, batches[name, workload], bf16, max_grad_norm)
                    times.setdefault((name, workload, precision), []).append(step_seconds)
                    real_tokens = sum(sum(batch.lengths) for batch in batches[name, workload])
                    logger.info(
                        "%s %s repeat %d/%d %s: %.2f s/step, %.0f real tokens/s",
                        workload, precision, repeat + 1, args.repeats, name,
                        sum(step_seconds) / len(step_seconds), real_tokens / sum(step_seconds),
                    )
    return times


# ---- results ----


def batch_flops(model: BenchmarkModel, batches: list[TrainingBatch]) -> tuple[FlopCount, FlopCount] | None:
    """Return the training FLOPs of one pass over ``batches``: padded (executed) and real tokens only."""
    if model.shape is None:
        return None
    padded = FlopCount()
    real = FlopCount()
    for batch in batches:
        padded = padded + padded_batch_forward_flops(model.shape, batch.size, batch.padded_length)
        real = real + real_tokens_forward_flops(model.shape, batch.lengths)
    return training_flops(padded), training_flops(real)


def build_results(
    models: list[BenchmarkModel],
    batches: dict[tuple[str, str], list[TrainingBatch]],
    times: dict[tuple[str, str, str], list[list[float]]],
    peaks: dict[str, dict[str, Any]],
    args: argparse.Namespace,
) -> list[dict[str, Any]]:
    """Combine step times, token counts and FLOPs into one row per (model, workload, precision)."""
    names = [model.name for model in models]
    reference = REFERENCE_MODEL if REFERENCE_MODEL in names else None
    rows = []
    for workload in args.workloads:
        for precision in args.precisions:
            real_rates: dict[str, float] = {}
            for model in models:
                items = batches[model.name, workload]
                real_tokens = sum(sum(batch.lengths) for batch in items)
                real_rates[model.name] = summarise([real_tokens / sum(steps) for steps in times[model.name, workload, precision]])["median"]

            for model in models:
                items = batches[model.name, workload]
                repeat_seconds = [sum(steps) for steps in times[model.name, workload, precision]]
                median_seconds = summarise(repeat_seconds)["median"]
                real_tokens = sum(sum(batch.lengths) for batch in items)
                padded_tokens = sum(batch.size * batch.padded_length for batch in items)
                sequences = sum(batch.size for batch in items)
                peak = peaks[precision]["flops_per_second"]

                row: dict[str, Any] = {
                    "model": model.name,
                    "workload": workload,
                    "precision": precision,
                    "steps": len(items),
                    "batch_sizes": [batch.size for batch in items],
                    "padded_lengths": [batch.padded_length for batch in items],
                    "real_tokens": real_tokens,
                    "padded_tokens": padded_tokens,
                    "step_seconds": times[model.name, workload, precision],
                    "seconds_per_step": median_seconds / len(items),
                    "real_tokens_per_second": summarise([real_tokens / seconds for seconds in repeat_seconds]),
                    "padded_tokens_per_second": padded_tokens / median_seconds,
                    "sequences_per_second": sequences / median_seconds,
                    "ratio_to_reference": ratio(real_rates[model.name], real_rates[reference] if reference else None),
                    "training_flops_padded": None,
                    "training_flops_real_tokens": None,
                    "achieved_flops_per_second": None,
                    "fraction_of_peak": None,
                    "fraction_of_peak_real_tokens": None,
                }
                counted = batch_flops(model, items)
                if counted is not None:
                    padded, real = counted
                    row["training_flops_padded"] = padded.to_dict()
                    row["training_flops_real_tokens"] = real.to_dict()
                    row["achieved_flops_per_second"] = padded.total / median_seconds
                    row["fraction_of_peak"] = padded.total / median_seconds / peak
                    row["fraction_of_peak_real_tokens"] = real.total / median_seconds / peak
                rows.append(row)
    return rows


def format_table(rows: list[dict[str, Any]], peaks: dict[str, dict[str, Any]]) -> str:
    """Render the peaks and the results as Markdown."""
    peak_lines = [
        f"- matmul peak, {precision}: {entry['flops_per_second'] / 1e9:,.1f} GFLOP/s "
        f"({entry['size']}x{entry['size']}; the higher of the medians of {len(entry['seconds_before'])} "
        f"products before and after the training runs)"
        for precision, entry in peaks.items()
    ]
    headers = [
        "workload", "precision", "model", "s/step", "real tokens/s", "padded tokens/s", "x MiniLM",
        "GFLOP/s", "% of peak",
    ]
    lines = []
    for row in rows:
        flops = row["achieved_flops_per_second"]
        fraction = row["fraction_of_peak"]
        lines.append([
            row["workload"], row["precision"], row["model"],
            format_number(row["seconds_per_step"], 3),
            format_number(row["real_tokens_per_second"]["median"], 0),
            format_number(row["padded_tokens_per_second"], 0),
            format_ratio(row["ratio_to_reference"]),
            format_number(flops / 1e9 if flops is not None else None),
            format_number(fraction * 100 if fraction is not None else None),
        ])
    return "\n".join(peak_lines) + "\n\n" + markdown_table(headers, lines)


# ---- command line ----


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure training throughput of HCAE presets and all-MiniLM-L6-v2 on the CPU, and its share of "
                    "the measured matrix-multiply peak.",
    )
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS),
                        help="presets, 'minilm' (all-MiniLM-L6-v2, the reference of every ratio) or model folders "
                             f"(default: {' '.join(DEFAULT_MODELS)})")
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS),
                        help="sentences (short, length-bucketed) and/or abstracts (256 tokens) (default: both)")
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS),
                        help="float32 and/or bf16 autocast (default: both)")

    # batch shape
    parser.add_argument("--run-profile", default="quick",
                        help=f"run-config profile whose distill stage sets the batch shape ({', '.join(PROFILES)}; "
                             f"default: quick)")
    parser.add_argument("--batch-size", type=int, default=None, help="texts per batch (default: from the profile)")
    parser.add_argument("--max-seq-length", type=int, default=None,
                        help="truncation length in tokens (default: from the profile)")

    # timing
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                        help=f"batches per repeat, the same for every model (default: {DEFAULT_STEPS})")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (default: 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed repeats before the timed ones (default: 1)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads, the same for every model (default: all available cores)")

    # matrix-multiply peak
    parser.add_argument("--peak-size", type=int, default=DEFAULT_PEAK_SIZE,
                        help=f"side of the square matrices of the peak measurement (default: {DEFAULT_PEAK_SIZE})")
    parser.add_argument("--peak-repeats", type=int, default=5, help="timed products per dtype for the peak (default: 5)")

    # input and output
    parser.add_argument("--data-dir", default=None,
                        help=f"data folder with sentences/ and scifact/ (default: ${hcae_data.DATA_DIR_ENV}, else ./data)")
    parser.add_argument("--out", default=None, help="write the results as JSON to this file")
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Raise `BenchmarkError` on an out-of-range option."""
    for name in ("steps", "repeats", "peak_size", "peak_repeats"):
        if getattr(args, name) < 1:
            raise BenchmarkError(f"--{name.replace('_', '-')} {getattr(args, name)} is invalid: it must be at least 1")
    for name in ("batch_size", "max_seq_length"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise BenchmarkError(f"--{name.replace('_', '-')} {value} is invalid: it must be at least 1")
    if args.warmup < 0:
        raise BenchmarkError(f"--warmup {args.warmup} is invalid: it must be 0 or more")
    if args.run_profile not in PROFILES:
        raise BenchmarkError(f"--run-profile {args.run_profile!r} is invalid; allowed: {', '.join(PROFILES)}")
    check_model_names(args.models)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark that ``args`` describes and return the exit status."""
    check_args(args)
    run_config = build_run_config({"profile": args.run_profile, "model": {"preset": "v1.1"}})
    distill = run_config.training.distill
    batch_size = args.batch_size or distill.batch_size
    max_seq_length = args.max_seq_length or distill.max_seq_length
    args.threads = apply_threads(args.threads)
    machine = machine_info(args.threads)
    warn_if_busy()

    folders = {"sentences": "sentences", "abstracts": "scifact"}
    data_dir = check_data_folder(args.data_dir, [folders[name] for name in args.workloads])
    texts = {}
    if "sentences" in args.workloads:
        texts["sentences"] = sentence_batches(data_dir, batch_size, args.steps)
    if "abstracts" in args.workloads:
        texts["abstracts"] = abstract_batches(data_dir, batch_size, args.steps)
    logger.info("batch shape: %d texts, at most %d tokens; %d threads", batch_size, max_seq_length, args.threads)

    peaks_before = measure_matmul_peaks(args)

    # preset folders stay until the end: the loaded models read their weights from them
    with tempfile.TemporaryDirectory(prefix="hcae-train-") as scratch:
        models = load_models(args.models, Path(scratch), max_seq_length)
        batches = {
            (model.name, workload): tokenize_batches(model.embedder, texts[workload])
            for model in models
            for workload in args.workloads
        }
        trainees = [
            make_trainee(model, {workload: batches[model.name, workload] for workload in args.workloads}, run_config)
            for model in models
        ]
        times = measure_training(trainees, batches, args, run_config)
        peaks = combine_peaks(peaks_before, measure_matmul_peaks(args))
        rows = build_results(models, batches, times, peaks, args)
        warn_if_above_peak(rows)

        payload = {
            "benchmark": "train",
            "machine": {**machine, "load_average_at_end": load_average()},
            "settings": {
                "models": [model.name for model in models],
                "reference": REFERENCE_MODEL if REFERENCE_MODEL in [model.name for model in models] else None,
                "workloads": args.workloads,
                "precisions": args.precisions,
                "run_profile": args.run_profile,
                "batch_size": batch_size,
                "max_seq_length": max_seq_length,
                "steps": args.steps,
                "repeats": args.repeats,
                "warmup": args.warmup,
                "threads": args.threads,
                "optimizer": "torch.optim.AdamW(fused=True)",
                "learning_rate": distill.learning_rate,
                "weight_decay": run_config.training.weight_decay,
                "max_grad_norm": run_config.training.max_grad_norm,
                "flops": "hcae.flops: analytic, training = 3 x forward; padded counts every position of the batch",
                "statistic": "median over repeats; ratios divide medians of real tokens per second",
            },
            "matmul_peak": peaks,
            "models": {model.name: model.describe() for model in models},
            "results": rows,
        }
    print(format_table(rows, peaks))
    if args.out:
        write_json(args.out, payload)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run the benchmark and return the exit status (see the module docstring)."""
    args = parse_args(argv)
    configure_logging()
    try:
        return run(args)
    except (HcaeError, HcaeConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
