"""Run settings: typed, frozen dataclasses built from YAML, one field per decision.

A run file has the sections ``model`` (an `HcaeConfig` preset plus overrides), ``training`` and
``evaluation``, and a ``profile`` whose values fill every field the file leaves out::

    profile: quick
    seed: 0
    model: {preset: v1.1}
    training:
      distill: {steps: 400}

Values are resolved in this order, later ones winning: the dataclass defaults, the profile, the
run file (or a study's base file), a study's variant, an Optuna trial's sampled parameters.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hcae.errors import RunConfigError
from hcae.modeling import HcaeConfig, HcaeConfigError
from hcae.presets import model_config_from_dict

INIT_CHOICES = ("random", "teacher")
# hcae trains the HCAE encoder of the model section. static trains a same-tokenizer StaticEmbedding
# bag of token vectors by the same recipe. teacher evaluates the teacher as is, without training.
ARCHITECTURES = ("hcae", "static", "teacher")
PRECISIONS = ("float32", "bf16")
CONTRASTIVE_DATASETS = ("snli", "scifact", "stsb")


@dataclass(frozen=True)
class DistillConfig:
    """Stage 1: the student learns to reproduce the teacher's sentence embeddings."""

    enabled: bool = True
    steps: int = 130
    batch_size: int = 64
    learning_rate: float = 5e-4
    warmup_ratio: float = 0.05
    # unlabelled sentences drawn from the general-English set
    sentences: int = 16000
    # pseudo-passages of consecutive sentences (about 180 words), so long inputs are trained too
    passages: int = 500
    # SciFact abstracts cited by training queries only (no dev or test query cites them)
    scifact_train_abstracts: bool = True
    # the sentences of the whole SciFact corpus. That is the evaluation corpus, so distilling on it
    # (without labels) adapts the model to the test documents. Every run records this switch.
    use_scifact_eval_corpus: bool = False
    # every text is truncated to this many tokens
    max_seq_length: int = 256


@dataclass(frozen=True)
class ContrastiveConfig:
    """Stage 2: in-batch-negatives ranking on SNLI and SciFact train pairs, CoSENT on STS-B train."""

    enabled: bool = True
    steps: int = 26
    batch_size: int = 64
    learning_rate: float = 2e-4
    warmup_ratio: float = 0.1
    datasets: tuple[str, ...] = CONTRASTIVE_DATASETS
    # every text is truncated to this many tokens; SciFact abstracts need the full 256
    max_seq_length: int = 256


@dataclass(frozen=True)
class TrainingConfig:
    """The recipe: initialisation, the teacher, precision and the two stages."""

    init: str = "teacher"
    teacher: str = "all-MiniLM-L6-v2"
    # bf16 autocast: "auto" turns it on where the hardware has native bf16 (a CUDA GPU that
    # supports it, or a CPU with AVX512-BF16 or AMX), true or false force it
    bf16: bool | str = "auto"
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    logging_steps: int = 10
    # dev-set STS-B Spearman is measured every this many steps (for curves and pruning); 0 = never
    dev_eval_steps: int = 60
    distill: DistillConfig = field(default_factory=DistillConfig)
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)


@dataclass(frozen=True)
class EvaluationConfig:
    """Final evaluation on the dev and test splits of the MTEB tasks."""

    tasks: tuple[str, ...] = ("STSBenchmark", "SciFact")
    splits: tuple[str, ...] = ("dev", "test")
    precision: str = "bf16"
    batch_size: int = 64


@dataclass(frozen=True)
class RunConfig:
    """Everything one training run needs. ``model`` is kept as the mapping it was written as."""

    name: str | None = None
    architecture: str = "hcae"
    profile: str = "quick"
    seed: int = 0
    data_dir: str | None = None
    model: dict[str, Any] = field(default_factory=lambda: {"preset": "v1.0"})
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    def model_config(self) -> HcaeConfig:
        """Build the model configuration this run trains."""
        return model_config_from_dict(self.model, source="model")

    def to_dict(self) -> dict[str, Any]:
        """Return the run as nested plain values, ready for YAML, JSON or MLflow params."""
        return _plain(dataclasses.asdict(self))

    def fingerprint(self) -> str:
        """Return a short hash of everything that changes the result (the name excluded)."""
        values = self.to_dict()
        values.pop("name", None)
        encoded = json.dumps(values, sort_keys=True).encode()
        return hashlib.sha256(encoded).hexdigest()[:12]

    def display_name(self) -> str:
        """Return a run name that shows the key knobs, for example ``v1.1-4c4a-swiglu-ls1e-05-pfx-s0``."""
        if self.name:
            return self.name
        if self.architecture == "static":
            return f"static-{self.training.init}-s{self.seed}"
        if self.architecture == "teacher":
            return f"teacher-{self.training.teacher}"
        config = self.model_config()
        preset = self.model.get("preset", "custom")
        conv = config.mixer_types.count("conv")
        attn = config.mixer_types.count("attn")
        parts = [str(preset), f"{conv}c{attn}a", config.feed_forward]
        if config.layer_scale_init is not None:
            parts.append(f"ls{config.layer_scale_init:g}")
        if config.prompts:
            parts.append("pfx")
        parts.append(f"s{self.seed}")
        return "-".join(parts)


# ---- profiles: the budget of every run whose file leaves a setting out ----

PROFILES: dict[str, dict[str, Any]] = {
    # seconds: tests and wiring checks, on a model shrunk by SMOKE_MODEL_SIZE
    "smoke": {
        "training": {
            # the shrunken model is narrower than the teacher, so there are no embeddings to copy
            "init": "random",
            "bf16": False,
            "logging_steps": 2,
            "dev_eval_steps": 4,
            "distill": {
                "steps": 8, "batch_size": 16, "sentences": 256, "passages": 16,
                "scifact_train_abstracts": False, "max_seq_length": 64,
            },
            "contrastive": {"steps": 6, "batch_size": 16, "max_seq_length": 64},
        },
        "evaluation": {"precision": "float32", "batch_size": 128},
    },
    # the full-size model on 2 CPU cores: the dataclass defaults. On an idle 2-core machine a
    # trial takes about 6 minutes: 130 distillation steps (about 2.8 minutes), 26 contrastive
    # steps (about 1.1 minutes) and the bf16 evaluation on dev and test (about 2 minutes)
    "quick": {},
    # a budget for a GPU
    "full": {
        "training": {
            "dev_eval_steps": 1000,
            "distill": {"steps": 20000, "batch_size": 128, "sentences": 180000, "passages": 40000},
            "contrastive": {"steps": 5000, "batch_size": 128},
        },
        "evaluation": {"precision": "float32", "batch_size": 128},
    },
}


# the smoke profile keeps each variant's mixers, feed-forward, LayerScale and prompts but shrinks
# its width, so a smoke study still exercises every toggle that the real study compares
SMOKE_MODEL_SIZE = {"hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 64, "conv_kernel_size": 3}


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` updated by ``override``, recursing into nested mappings.

    The ``model`` section is the exception in one way: an override that names a new ``preset``
    replaces the whole model section, because the preset's fields would otherwise mix with the
    earlier preset's overrides.
    """
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if key == "model" and isinstance(value, dict) and "preset" in value:
            merged[key] = copy.deepcopy(value)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def set_dotted(values: dict[str, Any], dotted_key: str, value: Any) -> None:
    """Set ``values["a"]["b"]["c"] = value`` for the key ``"a.b.c"``, creating mappings on the way."""
    *parents, last = dotted_key.split(".")
    target = values
    for parent in parents:
        target = target.setdefault(parent, {})
        if not isinstance(target, dict):
            raise RunConfigError(f"cannot set {dotted_key!r}: {parent!r} is not a section")
    target[last] = value


def build_run_config(values: dict[str, Any], source: str = "run config") -> RunConfig:
    """Build a `RunConfig` from a mapping, filling the gaps from its profile.

    Raises:
        RunConfigError: on an unknown section, key, profile or an invalid value; the message
            names the key path, the value and the allowed ones.
    """
    if not isinstance(values, dict):
        raise RunConfigError(f"{source}: expected a mapping at the top level, found {type(values).__name__}")
    profile = values.get("profile", "quick")
    if profile not in PROFILES:
        raise RunConfigError(f"{source}: profile={profile!r} is invalid; allowed: {sorted(PROFILES)}")
    resolved = merge(PROFILES[profile], values)
    resolved["profile"] = profile
    if profile == "smoke":
        resolved["model"] = {**resolved.get("model", {"preset": "v1.0"}), **SMOKE_MODEL_SIZE}

    run = _build_dataclass(RunConfig, resolved, source, "")
    _validate(run, source)
    return run


def load_run_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Load a run YAML file, apply dotted-key ``overrides`` (``{"training.distill.steps": 10}``) and build it."""
    values = read_yaml(path)
    for key, value in (overrides or {}).items():
        set_dotted(values, key, value)
    return build_run_config(values, source=str(path))


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise RunConfigError(f"config file {path} does not exist; check the path")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise RunConfigError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(values, dict):
        raise RunConfigError(f"{path}: expected a mapping at the top level, found {type(values).__name__}")
    return values


def _build_dataclass(cls: type, values: Any, source: str, prefix: str) -> Any:
    if not isinstance(values, dict):
        raise RunConfigError(f"{source}: {prefix.rstrip('.') or 'the file'} must be a mapping, got {values!r}")
    fields = {item.name: item for item in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise RunConfigError(
            f"{source}: unknown key {prefix + unknown[0]!r}; allowed keys here: {sorted(fields)}"
        )

    arguments = {}
    for name, value in values.items():
        default = fields[name].default_factory() if fields[name].default_factory is not dataclasses.MISSING else fields[name].default
        if dataclasses.is_dataclass(default):
            arguments[name] = _build_dataclass(type(default), value, source, f"{prefix}{name}.")
        elif name == "model":
            arguments[name] = value
        else:
            arguments[name] = _coerce(value, default, f"{prefix}{name}", source)
    return cls(**arguments)


def _coerce(value: Any, default: Any, key: str, source: str) -> Any:
    """Check a leaf value against its default's type; YAML gives lists where tuples are kept."""
    if default is None or value is None:
        return value
    if key.endswith("bf16"):
        if value not in (True, False, "auto"):
            raise RunConfigError(f"{source}: {key}={value!r} is invalid: use auto, true or false")
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise RunConfigError(f"{source}: {key}={value!r} is invalid: use true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise RunConfigError(f"{source}: {key}={value!r} is invalid: it must be an integer")
        return value
    if isinstance(default, float):
        # YAML 1.1 reads 5e-4 (no dot) as a string, so numeric strings are accepted here
        if isinstance(value, bool):
            raise RunConfigError(f"{source}: {key}={value!r} is invalid: it must be a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise RunConfigError(f"{source}: {key}={value!r} is invalid: it must be a number") from None
    if isinstance(default, tuple):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise RunConfigError(f"{source}: {key}={value!r} is invalid: it must be a list")
        return tuple(value)
    if isinstance(default, str) and not isinstance(value, str):
        raise RunConfigError(f"{source}: {key}={value!r} is invalid: it must be a string")
    return value


def _validate(run: RunConfig, source: str) -> None:
    training = run.training
    if run.architecture not in ARCHITECTURES:
        raise RunConfigError(f"{source}: architecture={run.architecture!r} is invalid; allowed: {list(ARCHITECTURES)}")
    if training.init not in INIT_CHOICES:
        raise RunConfigError(f"{source}: training.init={training.init!r} is invalid; allowed: {list(INIT_CHOICES)}")
    if run.evaluation.precision not in PRECISIONS:
        raise RunConfigError(
            f"{source}: evaluation.precision={run.evaluation.precision!r} is invalid; allowed: {list(PRECISIONS)}"
        )
    unknown = sorted(set(training.contrastive.datasets) - set(CONTRASTIVE_DATASETS))
    if unknown:
        raise RunConfigError(
            f"{source}: training.contrastive.datasets has unknown {unknown[0]!r}; allowed: {list(CONTRASTIVE_DATASETS)}"
        )
    bad_splits = sorted(set(run.evaluation.splits) - {"dev", "test"})
    if bad_splits:
        raise RunConfigError(f"{source}: evaluation.splits has unknown {bad_splits[0]!r}; allowed: ['dev', 'test']")

    for stage_name in ("distill", "contrastive"):
        stage = getattr(training, stage_name)
        for key in ("steps", "batch_size"):
            if getattr(stage, key) < 1:
                raise RunConfigError(
                    f"{source}: training.{stage_name}.{key}={getattr(stage, key)} is invalid: it must be at least 1"
                )
        if not 0 < stage.learning_rate < 1:
            raise RunConfigError(
                f"{source}: training.{stage_name}.learning_rate={stage.learning_rate} is invalid: use a value in (0, 1)"
            )
    if not (training.distill.enabled or training.contrastive.enabled) and training.init == "random":
        raise RunConfigError(
            f"{source}: both training stages are disabled and init is random: the run would evaluate noise; "
            f"enable a stage or set training.init: teacher"
        )
    try:
        config = run.model_config()
    except HcaeConfigError as error:
        raise RunConfigError(f"{source}: {error}") from None
    for stage_name in ("distill", "contrastive"):
        length = getattr(training, stage_name).max_seq_length
        if not 1 <= length <= config.max_position_embeddings:
            raise RunConfigError(
                f"{source}: training.{stage_name}.max_seq_length={length} is invalid: the model has "
                f"max_position_embeddings={config.max_position_embeddings}, so use 1 to that"
            )


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings to dotted keys: ``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat
