"""Profile one training forward and backward pass with torch.profiler and list the operations
that take the most CPU time, to show where a model's time goes.

    python benchmarks/profile_step.py --model v1.1 --precision bf16 --out benchmarks/results/profile_v1.1_bf16.json
    python benchmarks/profile_step.py --model v1.1 --precision float32 --seq-length 64

Exit status: 0 on success, 2 on an invalid option.

The input is one batch of random token ids with no padding, by default the ``quick`` profile's
distillation shape (64 texts of 256 tokens). The model is in train mode (dropout on); the loss
is the MSE to a random target, as in `benchmarks/train.py`. One untimed forward and backward
pass runs first, so one-off setup (thread pools, oneDNN kernel creation) stays out of the
profile. The optimizer step is not profiled.

The table lists operators by self CPU time: the time inside an operator minus the time inside
the operators it calls. ``forward`` and ``backward`` are the two profiled ranges, and their
total CPU time is the wall time of each part.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # run as `python benchmarks/profile_step.py`: make the repository root importable for benchmarks.common
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402
from torch.profiler import ProfilerActivity, profile, record_function  # noqa: E402

from benchmarks.common import (  # noqa: E402
    PRECISIONS,
    BenchmarkError,
    apply_threads,
    configure_logging,
    load_models,
    machine_info,
    write_json,
)
from hcae.errors import HcaeError  # noqa: E402
from hcae.modeling import HcaeConfigError  # noqa: E402
from hcae.run_config import build_run_config  # noqa: E402

logger = logging.getLogger("benchmarks.profile_step")

# token ids are drawn above the special tokens and unused entries of the BERT vocabulary
FIRST_ORDINARY_TOKEN_ID = 1000
SEED = 0


def random_batch(embedder: SentenceTransformer, batch_size: int, length: int) -> dict[str, torch.Tensor]:
    """Return a batch of random token ids without padding, in the model's input format."""
    vocab_size = embedder[0].model.config.vocab_size
    generator = torch.Generator().manual_seed(SEED)
    input_ids = torch.randint(FIRST_ORDINARY_TOKEN_ID, vocab_size, (batch_size, length), generator=generator)
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "token_type_ids": torch.zeros_like(input_ids),
    }


def forward_backward(embedder: SentenceTransformer, batch: dict[str, torch.Tensor], target: torch.Tensor, bf16: bool) -> None:
    """Run one forward pass, MSE loss and backward pass, each in a named profiler range."""
    with record_function("forward"):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            embeddings = embedder(dict(batch))["sentence_embedding"]
            loss = F.mse_loss(embeddings.float(), target)
    with record_function("backward"):
        loss.backward()
    embedder.zero_grad(set_to_none=True)


def top_operations(events: Any, count: int) -> list[dict[str, Any]]:
    """Return the ``count`` operators with the most self CPU time, with their share of the total."""
    total_self = sum(event.self_cpu_time_total for event in events) or 1.0
    ranked = sorted(events, key=lambda event: event.self_cpu_time_total, reverse=True)[:count]
    return [
        {
            "name": event.key,
            "calls": event.count,
            "self_cpu_ms": event.self_cpu_time_total / 1000,
            "cpu_total_ms": event.cpu_time_total / 1000,
            "self_cpu_share": event.self_cpu_time_total / total_self,
        }
        for event in ranked
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    quick = build_run_config({"profile": "quick", "model": {"preset": "v1.1"}}).training.distill
    parser = argparse.ArgumentParser(description="Profile one forward and backward pass and list the slowest operators.")
    parser.add_argument("--model", default="v1.1", help="preset, 'minilm' or a model folder (default: v1.1)")
    parser.add_argument("--precision", choices=PRECISIONS, default="bf16", help="float32 or bf16 autocast (default: bf16)")
    parser.add_argument("--batch-size", type=int, default=quick.batch_size,
                        help=f"texts per batch (default: {quick.batch_size}, the quick profile's)")
    parser.add_argument("--seq-length", type=int, default=quick.max_seq_length,
                        help=f"tokens per text (default: {quick.max_seq_length}, the quick profile's)")
    parser.add_argument("--top", type=int, default=25, help="number of operators to list (default: 25)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: all available cores)")
    parser.add_argument("--trace", default=None, help="also write a Chrome trace (chrome://tracing, Perfetto) to this file")
    parser.add_argument("--out", default=None, help="write the top operators as JSON to this file")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    """Profile the step that ``args`` describes and return the exit status."""
    for name in ("batch_size", "seq_length", "top"):
        if getattr(args, name) < 1:
            raise BenchmarkError(f"--{name.replace('_', '-')} {getattr(args, name)} is invalid: it must be at least 1")
    args.threads = apply_threads(args.threads)
    bf16 = args.precision == "bf16"

    with tempfile.TemporaryDirectory(prefix="hcae-profile-") as scratch:
        (model,) = load_models([args.model], Path(scratch), max_seq_length=args.seq_length)
        embedder = model.embedder
        embedder.train()
        batch = random_batch(embedder, args.batch_size, args.seq_length)
        target = F.normalize(torch.randn(args.batch_size, embedder.get_embedding_dimension()), dim=-1)

        forward_backward(embedder, batch, target, bf16)
        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            forward_backward(embedder, batch, target, bf16)

    events = profiler.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.top))
    ranges = {event.key: event.cpu_time_total / 1000 for event in events if event.key in ("forward", "backward")}
    print(f"forward {ranges.get('forward', 0):.1f} ms, backward {ranges.get('backward', 0):.1f} ms")

    if args.trace:
        Path(args.trace).parent.mkdir(parents=True, exist_ok=True)
        profiler.export_chrome_trace(args.trace)
    if args.out:
        write_json(args.out, {
            "benchmark": "profile_step",
            "machine": machine_info(args.threads),
            "settings": {
                "model": model.name,
                "precision": args.precision,
                "batch_size": args.batch_size,
                "seq_length": args.seq_length,
                "input": "random token ids, no padding",
                "step": "forward, MSE loss, backward; train mode",
            },
            "model": model.describe(),
            "range_ms": ranges,
            "top_operations": top_operations(events, args.top),
        })
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, profile one step and return the exit status."""
    args = parse_args(argv)
    configure_logging()
    try:
        return run(args)
    except (HcaeError, HcaeConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
