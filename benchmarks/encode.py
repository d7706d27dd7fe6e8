"""Encode throughput and peak memory of HCAE presets and all-MiniLM-L6-v2 on the CPU.

The full benchmark (run it on an idle machine; about 25 minutes on 2 cores by an estimate):

    python benchmarks/encode.py --out benchmarks/results/encode.json

A wiring check in seconds:

    python benchmarks/encode.py --models tiny minilm --limit 16 --repeats 1 --warmup 0 --out /tmp/encode.json

The data folder, with ``stsb/`` and ``scifact/``, is ``--data-dir``, else ``$HCAE_DATA_DIR``, else ``./data``.

Exit status: 0 on success, 1 if a memory measurement failed (the speed results are still
written), 2 on an invalid option or missing data.

What runs:

- Texts: the STS Benchmark test sentences (both sentences of each pair, pair by pair) and the
  SciFact corpus abstracts (title and abstract joined as mteb joins them), the first ``--limit``
  of each. Each model tokenizes them with its own tokenizer (all default models share the
  bert-base-uncased WordPiece vocabulary) and truncates at ``--max-seq-length`` tokens. No
  prompt or prefix is added, so every model with that tokenizer encodes the same token ids.
- Batching: texts are sorted by token count, longest first, and cut into batches of
  ``--batch-size``, so a batch pads only to its own longest text. sentence-transformers'
  ``encode`` batches the same way, except that version 6.3 sorts by character count.
- Timed region: the model's forward pass over pre-tokenized batches (transformer, pooling and,
  for all-MiniLM-L6-v2, its normalisation layer) under ``torch.inference_mode``, in float32 or
  under ``torch.autocast("cpu", dtype=torch.bfloat16)``. Tokenizing the same batches is timed
  separately for every model, and the end-to-end throughput divides the texts by the sum of
  both times. sentence-transformers' ``encode`` times both and converts the output as well.
- Repeats: every repeat runs each model once in turn, so a slow drift of the machine affects
  all models alike. A throughput is the median over ``--repeats`` repeats, after ``--warmup``
  untimed passes. A ratio is a model's median divided by all-MiniLM-L6-v2's median from the
  same run, so above 1 means faster than all-MiniLM-L6-v2.
- Presets have random weights (seeded): speed and memory do not depend on weight values.
- Peak memory: each (model, dataset, precision) runs in a fresh process, after the timing; see
  `run_memory_worker` for the method and its limits.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import logging
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # run as `python benchmarks/encode.py`: make the repository root importable for benchmarks.common
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
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
    load_model_folder,
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
from hcae.flops import EncoderShape, FlopCount, padded_batch_forward_flops, real_tokens_forward_flops  # noqa: E402
from hcae.modeling import HcaeConfigError  # noqa: E402

logger = logging.getLogger("benchmarks.encode")

# dataset name -> the subfolder of the data folder it reads
DATASET_FOLDERS = {"stsb": "stsb", "scifact": "scifact"}
DEFAULT_LIMIT = 1024
DEFAULT_BATCH_SIZE = 32
DEFAULT_MAX_SEQ_LENGTH = 256
# the memory run encodes this many of the longest batches: the longest batch sets the peak
DEFAULT_MEMORY_BATCHES = 2
MEMORY_WORKER_TIMEOUT_S = 900


# ---- texts and batches ----


def load_texts(dataset: str, data_dir: Path, limit: int) -> list[str]:
    """Return the first ``limit`` texts of a benchmark dataset.

    ``stsb``: the test pairs' sentences in the order sentence1, sentence2 of pair 0, then of
    pair 1 and so on. ``scifact``: the corpus documents in file order, as title plus abstract.
    """
    if dataset == "stsb":
        pairs = hcae_data.load_stsb("test", data_dir)
        texts = [sentence for pair in zip(pairs["sentence1"], pairs["sentence2"]) for sentence in pair]
    elif dataset == "scifact":
        corpus = hcae_data.load_scifact(data_dir).corpus
        texts = [document.full_text for document in corpus.values()]
    else:
        raise BenchmarkError(f"unknown dataset {dataset!r}; allowed: {sorted(DATASET_FOLDERS)}")
    return texts[:limit]


@dataclass
class Workload:
    """One dataset tokenized for one model, sorted by length and cut into batches.

    Attributes:
        dataset: ``"stsb"`` or ``"scifact"``.
        batch_texts: the texts of each batch.
        batches: the tokenized batches, ready for the model's forward pass.
        lengths: real (unpadded) token count of every text, in batch order.
        padded_lengths: the padded length of each batch.
    """

    dataset: str
    batch_texts: list[list[str]]
    batches: list[dict[str, Any]]
    lengths: list[int]
    padded_lengths: list[int]

    @property
    def texts(self) -> int:
        """Number of texts."""
        return len(self.lengths)

    @property
    def real_tokens(self) -> int:
        """Tokens that are not padding, special tokens included."""
        return sum(self.lengths)

    @property
    def padded_tokens(self) -> int:
        """Positions the model computes, padding included."""
        return sum(len(texts) * length for texts, length in zip(self.batch_texts, self.padded_lengths))

    def forward_flops(self, shape: EncoderShape) -> tuple[FlopCount, FlopCount]:
        """Return the FLOPs of one pass as executed (padded) and as the real tokens need them."""
        padded = FlopCount()
        for texts, length in zip(self.batch_texts, self.padded_lengths):
            padded = padded + padded_batch_forward_flops(shape, len(texts), length)
        return padded, real_tokens_forward_flops(shape, self.lengths)

    def summary(self) -> dict[str, Any]:
        """Return the sizes that the results file records."""
        return {
            "texts": self.texts,
            "batches": len(self.batches),
            "real_tokens": self.real_tokens,
            "padded_tokens": self.padded_tokens,
            "max_length": max(self.padded_lengths),
            "mean_length": round(self.real_tokens / self.texts, 1),
        }


def token_counts(embedder: SentenceTransformer, texts: list[str], chunk: int = 256) -> list[int]:
    """Return the token count of each text after the model's truncation, special tokens included."""
    counts: list[int] = []
    for start in range(0, len(texts), chunk):
        features = embedder.preprocess(texts[start : start + chunk])
        counts.extend(int(count) for count in features["attention_mask"].sum(dim=1).tolist())
    return counts


def sorted_batches(texts: list[str], lengths: list[int], batch_size: int) -> list[list[str]]:
    """Sort texts longest first (ties keep their order) and cut them into batches."""
    order = sorted(range(len(texts)), key=lambda index: -lengths[index])
    ordered = [texts[index] for index in order]
    return [ordered[start : start + batch_size] for start in range(0, len(ordered), batch_size)]


def build_workload(embedder: SentenceTransformer, dataset: str, texts: list[str], batch_size: int) -> Workload:
    """Tokenize ``texts`` for one model and batch them as `sorted_batches` describes."""
    batch_texts = sorted_batches(texts, token_counts(embedder, texts), batch_size)
    batches = [embedder.preprocess(batch) for batch in batch_texts]
    lengths: list[int] = []
    for features in batches:
        lengths.extend(int(count) for count in features["attention_mask"].sum(dim=1).tolist())
    padded_lengths = [int(features["input_ids"].shape[1]) for features in batches]
    return Workload(dataset, batch_texts, batches, lengths, padded_lengths)


# ---- timing ----


def run_forward(embedder: SentenceTransformer, batches: list[dict[str, Any]], bf16: bool) -> None:
    """Run the model's forward pass over every batch, without gradients."""
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for features in batches:
            # the forward pass adds its outputs to the dict it receives, so give it a copy
            embedder(dict(features))


def time_forward(embedder: SentenceTransformer, batches: list[dict[str, Any]], bf16: bool) -> float:
    """Return the seconds of one forward pass over all batches."""
    gc.collect()
    start = time.perf_counter()
    run_forward(embedder, batches, bf16)
    return time.perf_counter() - start


def time_tokenization(embedder: SentenceTransformer, batch_texts: list[list[str]]) -> float:
    """Return the seconds that the model's tokenizer takes for all batches."""
    start = time.perf_counter()
    for texts in batch_texts:
        embedder.preprocess(texts)
    return time.perf_counter() - start


@dataclass
class SpeedRecord:
    """Times of one (model, dataset, precision) over the repeats, in seconds."""

    model_seconds: list[float]
    tokenize_seconds: list[float]


def measure_speed(
    models: list[BenchmarkModel], workloads: dict[tuple[str, str], Workload], args: argparse.Namespace
) -> dict[tuple[str, str, str], SpeedRecord]:
    """Time every model on every dataset and precision, models interleaved within each repeat."""
    records: dict[tuple[str, str, str], SpeedRecord] = {}
    for dataset in args.datasets:
        for precision in args.precisions:
            bf16 = precision == "bf16"
            for model in models:
                model.embedder.eval()
                for warmup in range(args.warmup):
                    seconds = time_forward(model.embedder, workloads[model.name, dataset].batches, bf16)
                    logger.info("%s %s warm-up %d/%d %s: %.2f s", dataset, precision, warmup + 1, args.warmup, model.name, seconds)

            for repeat in range(args.repeats):
                for model in models:
                    workload = workloads[model.name, dataset]
                    record = records.setdefault((model.name, dataset, precision), SpeedRecord([], []))
                    seconds = time_forward(model.embedder, workload.batches, bf16)
                    record.model_seconds.append(seconds)
                    record.tokenize_seconds.append(time_tokenization(model.embedder, workload.batch_texts))
                    logger.info(
                        "%s %s repeat %d/%d %s: %.1f texts/s",
                        dataset, precision, repeat + 1, args.repeats, model.name, workload.texts / seconds,
                    )
    return records


# ---- peak memory, each measurement in a fresh process ----


def _status_kib(field: str) -> int:
    """Return a ``/proc/self/status`` value in KiB, for example ``VmRSS`` or ``VmHWM``."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise BenchmarkError(f"/proc/self/status has no {field} line; peak memory needs Linux")


def _reset_peak_rss() -> None:
    # Linux >= 4.0: writing 5 to clear_refs resets the process's peak RSS (VmHWM) to its current RSS
    Path("/proc/self/clear_refs").write_text("5")


def _release_free_heap() -> bool:
    """Return freed heap pages to the kernel (glibc ``malloc_trim``); False where that is unavailable."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True


def run_memory_worker(spec_path: Path) -> int:
    """Measure the memory of one model on one workload, in this (fresh) process.

    Method: the resident set size (RSS) that Linux reports for this process. The worker loads the
    model, encodes the longest batches once as a warm-up and returns freed heap pages to the
    kernel (glibc ``malloc_trim``). The RSS growth since before loading is then the memory the
    model keeps resident between encodes (weights, tokenizer, code, caches). It is read after
    the warm-up because safetensors weights are memory-mapped and become resident when first
    read. The worker then resets the peak RSS (``/proc/self/clear_refs``), encodes the same
    batches again and reads the new peak (``VmHWM``). The encode increase is that peak minus the
    RSS just before the second pass: activations, attention and matmul workspace, outputs.

    Limits: RSS counts pages, not tensors. It includes what the allocator keeps and what oneDNN
    caches, and it misses memory freed and reused within the pass, so it is a process-level
    figure with a resolution of a few MiB. Only the longest batches run, and they set the peak
    because activations grow with the padded length. tracemalloc would not help, because it tracks
    Python's allocations only, not PyTorch's.
    """
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    apply_threads(spec["threads"])
    bf16 = spec["precision"] == "bf16"

    rss_before_load = _status_kib("VmRSS")
    embedder = load_model_folder(Path(spec["folder"]), spec["max_seq_length"])
    embedder.eval()
    batches = [embedder.preprocess(texts) for texts in spec["batch_texts"]]
    run_forward(embedder, batches, bf16)
    gc.collect()
    trimmed = _release_free_heap()
    rss_at_rest = _status_kib("VmRSS")
    peak_before_reset = _status_kib("VmHWM")

    _reset_peak_rss()
    rss_before_encode = _status_kib("VmRSS")
    run_forward(embedder, batches, bf16)
    peak_during_encode = _status_kib("VmHWM")

    result = {
        "baseline_rss_mib": rss_before_load / 1024,
        "model_rss_mib": (rss_at_rest - rss_before_load) / 1024,
        "encode_rss_increase_mib": (peak_during_encode - rss_before_encode) / 1024,
        "peak_rss_mib": max(peak_before_reset, peak_during_encode) / 1024,
        "measured_batches": len(batches),
        "measured_padded_lengths": [int(features["input_ids"].shape[1]) for features in batches],
        "malloc_trim": trimmed,
    }
    Path(spec["output"]).write_text(json.dumps(result), encoding="utf-8")
    return 0


def measure_memory_in_subprocess(
    model: BenchmarkModel, workload: Workload, precision: str, args: argparse.Namespace, scratch: Path
) -> dict[str, Any]:
    """Run `run_memory_worker` in a fresh Python process and return its measurements.

    Raises:
        BenchmarkError: if the worker fails or times out; the message carries its last output lines.
    """
    stem = f"memory-{len(list(scratch.glob('memory-*.json')))}"
    spec_path = scratch / f"{stem}.json"
    output_path = scratch / f"{stem}.result.json"
    spec = {
        "folder": str(model.folder),
        "batch_texts": workload.batch_texts[: args.memory_batches],
        "precision": precision,
        "threads": args.threads,
        "max_seq_length": args.max_seq_length,
        "output": str(output_path),
    }
    spec_path.write_text(json.dumps(spec), encoding="utf-8")

    command = [sys.executable, str(Path(__file__).resolve()), "--memory-worker", str(spec_path)]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=MEMORY_WORKER_TIMEOUT_S)
    except subprocess.TimeoutExpired as error:
        raise BenchmarkError(f"memory worker for {model.name} timed out after {MEMORY_WORKER_TIMEOUT_S} s") from error
    if completed.returncode != 0 or not output_path.is_file():
        tail = "\n".join(completed.stderr.strip().splitlines()[-5:])
        raise BenchmarkError(f"memory worker for {model.name} failed with exit status {completed.returncode}: {tail}")
    return json.loads(output_path.read_text(encoding="utf-8"))


def measure_memory(
    models: list[BenchmarkModel], workloads: dict[tuple[str, str], Workload], args: argparse.Namespace, scratch: Path
) -> tuple[dict[tuple[str, str, str], dict[str, Any]], list[str]]:
    """Measure every (model, dataset, precision) in its own process; return results and errors."""
    results: dict[tuple[str, str, str], dict[str, Any]] = {}
    errors: list[str] = []
    jobs = [(model, dataset, precision) for dataset in args.datasets for precision in args.precisions for model in models]
    for index, (model, dataset, precision) in enumerate(jobs, start=1):
        try:
            measured = measure_memory_in_subprocess(model, workloads[model.name, dataset], precision, args, scratch)
        except BenchmarkError as error:
            logger.error("memory %d/%d %s %s %s failed: %s", index, len(jobs), dataset, precision, model.name, error)
            errors.append(str(error))
            continue
        results[model.name, dataset, precision] = measured
        logger.info(
            "memory %d/%d %s %s %s: encode +%.0f MiB, model %.0f MiB",
            index, len(jobs), dataset, precision, model.name,
            measured["encode_rss_increase_mib"], measured["model_rss_mib"],
        )
    return results, errors


# ---- results ----


def build_results(
    models: list[BenchmarkModel],
    workloads: dict[tuple[str, str], Workload],
    speed: dict[tuple[str, str, str], SpeedRecord],
    memory: dict[tuple[str, str, str], dict[str, Any]] | None,
    args: argparse.Namespace,
) -> list[dict[str, Any]]:
    """Combine times, token counts, FLOPs and memory into one row per (model, dataset, precision)."""
    names = [model.name for model in models]
    reference = REFERENCE_MODEL if REFERENCE_MODEL in names else None
    rows = []
    for dataset in args.datasets:
        for precision in args.precisions:
            throughput: dict[str, dict[str, float]] = {}
            end_to_end: dict[str, float] = {}
            for model in models:
                record = speed[model.name, dataset, precision]
                texts = workloads[model.name, dataset].texts
                throughput[model.name] = summarise([texts / seconds for seconds in record.model_seconds])
                totals = [a + b for a, b in zip(record.model_seconds, record.tokenize_seconds)]
                end_to_end[model.name] = summarise([texts / seconds for seconds in totals])["median"]

            for model in models:
                workload = workloads[model.name, dataset]
                record = speed[model.name, dataset, precision]
                median_seconds = summarise(record.model_seconds)["median"]
                row: dict[str, Any] = {
                    "model": model.name,
                    "dataset": dataset,
                    "precision": precision,
                    **workload.summary(),
                    "model_seconds": record.model_seconds,
                    "tokenize_seconds": record.tokenize_seconds,
                    "texts_per_second": throughput[model.name],
                    "end_to_end_texts_per_second": end_to_end[model.name],
                    "ratio_to_reference": ratio(
                        throughput[model.name]["median"], throughput[reference]["median"] if reference else None
                    ),
                    "end_to_end_ratio_to_reference": ratio(
                        end_to_end[model.name], end_to_end[reference] if reference else None
                    ),
                    "forward_flops_padded": None,
                    "forward_flops_real_tokens": None,
                    "achieved_flops_per_second": None,
                }
                if model.shape is not None:
                    padded, real = workload.forward_flops(model.shape)
                    row["forward_flops_padded"] = padded.to_dict()
                    row["forward_flops_real_tokens"] = real.to_dict()
                    row["achieved_flops_per_second"] = padded.total / median_seconds

                row["memory"] = None if memory is None else memory.get((model.name, dataset, precision))
                rows.append(row)

            if memory is not None and reference is not None:
                reference_memory = memory.get((reference, dataset, precision))
                for row in rows[-len(models):]:
                    if row["memory"] is not None and reference_memory is not None:
                        row["memory"]["encode_increase_ratio_to_reference"] = ratio(
                            row["memory"]["encode_rss_increase_mib"], reference_memory["encode_rss_increase_mib"]
                        )
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """Render the results as a Markdown table, one line per (dataset, precision, model)."""
    headers = [
        "dataset", "precision", "model", "texts/s", "x MiniLM", "texts/s with tokenization", "x MiniLM",
        "GFLOP/s", "encode peak +MiB", "model MiB",
    ]
    lines = []
    for row in rows:
        memory = row["memory"] or {}
        flops = row["achieved_flops_per_second"]
        lines.append([
            row["dataset"], row["precision"], row["model"],
            format_number(row["texts_per_second"]["median"]), format_ratio(row["ratio_to_reference"]),
            format_number(row["end_to_end_texts_per_second"]), format_ratio(row["end_to_end_ratio_to_reference"]),
            format_number(flops / 1e9 if flops is not None else None),
            format_number(memory.get("encode_rss_increase_mib"), 0), format_number(memory.get("model_rss_mib"), 0),
        ])
    return markdown_table(headers, lines)


# ---- command line ----


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure encode throughput and peak memory of HCAE presets and all-MiniLM-L6-v2 on the CPU.",
    )
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS),
                        help="presets, 'minilm' (all-MiniLM-L6-v2, the reference of every ratio) or model folders "
                             f"(default: {' '.join(DEFAULT_MODELS)})")
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASET_FOLDERS), default=["stsb", "scifact"],
                        help="text sets to encode (default: both)")
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS),
                        help="float32 and/or bf16 autocast (default: both)")

    # texts and batches
    parser.add_argument("--limit", type=int, default=DEFAULT_LIMIT,
                        help=f"number of texts of each dataset, from its start (default: {DEFAULT_LIMIT})")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                        help=f"texts per batch (default: {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--max-seq-length", type=int, default=DEFAULT_MAX_SEQ_LENGTH,
                        help=f"truncation length in tokens (default: {DEFAULT_MAX_SEQ_LENGTH})")

    # timing
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per model, dataset and precision (default: 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed passes before the timed ones (default: 1)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads, the same for every model (default: all available cores)")

    # memory
    parser.add_argument("--memory-batches", type=int, default=DEFAULT_MEMORY_BATCHES,
                        help=f"number of batches, longest first, that each memory measurement encodes (default: {DEFAULT_MEMORY_BATCHES})")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")

    # input and output
    parser.add_argument("--data-dir", default=None,
                        help=f"data folder with stsb/ and scifact/ (default: ${hcae_data.DATA_DIR_ENV}, else ./data)")
    parser.add_argument("--out", default=None, help="write the results as JSON to this file")
    parser.add_argument("--memory-worker", type=Path, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Raise `BenchmarkError` on an out-of-range option."""
    for name in ("limit", "batch_size", "max_seq_length", "repeats", "memory_batches"):
        if getattr(args, name) < 1:
            raise BenchmarkError(f"--{name.replace('_', '-')} {getattr(args, name)} is invalid: it must be at least 1")
    if args.warmup < 0:
        raise BenchmarkError(f"--warmup {args.warmup} is invalid: it must be 0 or more")
    check_model_names(args.models)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark that ``args`` describes and return the exit status."""
    check_args(args)
    args.threads = apply_threads(args.threads)
    machine = machine_info(args.threads)
    warn_if_busy()
    data_dir = check_data_folder(args.data_dir, [DATASET_FOLDERS[name] for name in args.datasets])
    texts = {dataset: load_texts(dataset, data_dir, args.limit) for dataset in args.datasets}
    logger.info("texts: %s; %d threads", ", ".join(f"{name} {len(items)}" for name, items in texts.items()), args.threads)

    memory_errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="hcae-encode-") as scratch_name:
        scratch = Path(scratch_name)
        models = load_models(args.models, scratch, args.max_seq_length)
        workloads = {
            (model.name, dataset): build_workload(model.embedder, dataset, texts[dataset], args.batch_size)
            for model in models
            for dataset in args.datasets
        }
        speed = measure_speed(models, workloads, args)
        memory = None
        if not args.no_memory:
            memory, memory_errors = measure_memory(models, workloads, args, scratch)

        rows = build_results(models, workloads, speed, memory, args)
        payload = {
            "benchmark": "encode",
            "machine": {**machine, "load_average_at_end": load_average()},
            "settings": {
                "models": [model.name for model in models],
                "reference": REFERENCE_MODEL if any(model.name == REFERENCE_MODEL for model in models) else None,
                "datasets": args.datasets,
                "precisions": args.precisions,
                "limit": args.limit,
                "batch_size": args.batch_size,
                "max_seq_length": args.max_seq_length,
                "repeats": args.repeats,
                "warmup": args.warmup,
                "threads": args.threads,
                "memory_batches": None if args.no_memory else args.memory_batches,
                "timed_region": "model forward pass over pre-tokenized batches; tokenization timed separately",
                "statistic": "median over repeats; ratios divide medians",
            },
            "models": {model.name: model.describe() for model in models},
            "results": rows,
            "memory_errors": memory_errors,
        }

    print(format_table(rows))
    if args.out:
        write_json(args.out, payload)
    return 1 if memory_errors else 0


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run the benchmark and return the exit status (see the module docstring)."""
    args = parse_args(argv)
    configure_logging()
    if args.memory_worker is not None:
        return run_memory_worker(args.memory_worker)
    try:
        return run(args)
    except (HcaeError, HcaeConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
