"""Named model configurations over one builder, `build_config`.

``v1.0`` and ``v1.1`` are the two published HCAE versions. ``attn8`` is the all-attention control at
v1.1's parameter count, ``attn6`` a six-layer attention encoder shaped like all-MiniLM-L6-v2 (for
speed comparisons), and ``tiny`` a small model for tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from hcae.modeling import HcaeConfig, HcaeConfigError

PREFIX_PROMPTS = {"query": "query: ", "document": "passage: "}

PRESETS: dict[str, dict[str, Any]] = {
    # 5 conv + 3 attn, GELU, no LayerScale, no prefixes: 20.76M parameters
    "v1.0": {
        "mixer_types": "5 conv + 3 attn",
        "feed_forward": "gelu",
        "layer_scale_init": None,
        "prompts": None,
    },
    # 4 conv + 4 attn, SwiGLU, LayerScale 1e-5, query/passage prefixes: 21.21M parameters
    "v1.1": {
        "mixer_types": "4 conv + 4 attn",
        "feed_forward": "swiglu",
        "layer_scale_init": 1e-5,
        "prompts": PREFIX_PROMPTS,
    },
    # v1.1 with every convolution replaced by attention. The nominal feed-forward width shrinks
    # from 1024 to 738, so the total stays at 21.21M, within 0.04% of v1.1.
    "attn8": {
        "mixer_types": "8 attn",
        "feed_forward": "swiglu",
        "intermediate_size": 738,
        "layer_scale_init": 1e-5,
        "prompts": PREFIX_PROMPTS,
    },
    # the shape of all-MiniLM-L6-v2: 6 attention layers with a GELU feed-forward of width 1536
    "attn6": {
        "mixer_types": "6 attn",
        "feed_forward": "gelu",
        "intermediate_size": 1536,
        "num_attention_heads": 12,
    },
    # a small model for tests: every mixer kind, seconds to build and run
    "tiny": {
        "hidden_size": 32,
        "mixer_types": "2 conv + 2 attn",
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "conv_kernel_size": 3,
    },
}


def build_config(preset: str | None = None, **overrides: Any) -> HcaeConfig:
    """Build an `HcaeConfig` from a preset and field overrides.

    Args:
        preset: a key of `PRESETS`, or None to start from the `HcaeConfig` defaults.
        **overrides: `HcaeConfig` fields that replace the preset's values. ``prefixes=True`` is a
            shorthand for ``prompts={"query": "query: ", "document": "passage: "}`` and
            ``prefixes=False`` for no prompts.

    Raises:
        HcaeConfigError: on an unknown preset, an unknown field or an invalid value.
    """
    if preset is not None and preset not in PRESETS:
        raise HcaeConfigError(f"unknown preset {preset!r}; available: {sorted(PRESETS)}")
    values = dict(PRESETS[preset]) if preset is not None else {}

    if "prefixes" in overrides:
        prefixes = overrides.pop("prefixes")
        if not isinstance(prefixes, bool):
            raise HcaeConfigError(f"prefixes={prefixes!r} is invalid: use true or false")
        if "prompts" in overrides:
            raise HcaeConfigError("give either prefixes or prompts, not both: they set the same field")
        values["prompts"] = dict(PREFIX_PROMPTS) if prefixes else None

    known = HcaeConfig.__dataclass_fields__
    unknown = sorted(key for key in overrides if key not in known)
    if unknown:
        raise HcaeConfigError(
            f"unknown model field {unknown[0]!r}; model fields are the HcaeConfig arguments, such as "
            f"mixer_types, conv_kernel_size, feed_forward, layer_scale_init, norm, pooling, prompts (or prefixes)"
        )
    values.update(overrides)
    return HcaeConfig(**values)


def model_config_from_dict(values: dict[str, Any], source: str = "config") -> HcaeConfig:
    """Build an `HcaeConfig` from a mapping such as a YAML ``model:`` section.

    The optional key ``preset`` names the starting point; every other key is a field override.
    """
    if not isinstance(values, dict):
        raise HcaeConfigError(f"{source}: the model section must be a mapping of fields, got {type(values).__name__}")
    overrides = dict(values)
    preset = overrides.pop("preset", None)
    try:
        return build_config(preset, **overrides)
    except HcaeConfigError as error:
        raise HcaeConfigError(f"{source}: {error}") from None


def load_model_config(spec: str | Path) -> HcaeConfig:
    """Resolve a preset name, a YAML file, a ``config.json`` or a saved model folder to an `HcaeConfig`.

    A YAML file is either a model section itself (``preset:`` plus field overrides) or a run or
    study file with a ``model:`` section.
    """
    text = str(spec)
    if text in PRESETS:
        return build_config(text)

    path = Path(text)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise HcaeConfigError(
            f"{text!r} is neither a preset ({', '.join(sorted(PRESETS))}) nor an existing file or model folder"
        )

    if path.suffix == ".json":
        return _config_from_json(path)
    if path.suffix not in (".yaml", ".yml"):
        raise HcaeConfigError(f"{path}: expected a .yaml, .yml or .json file")
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise HcaeConfigError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(document, dict):
        raise HcaeConfigError(f"{path}: expected a mapping at the top level, found {type(document).__name__}")
    section = document.get("model", document)
    return model_config_from_dict(section, source=str(path))


def _config_from_json(path: Path) -> HcaeConfig:
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise HcaeConfigError(f"{path} is not valid JSON: {error}") from None
    if values.get("model_type") != HcaeConfig.model_type:
        raise HcaeConfigError(
            f"{path} describes model_type={values.get('model_type')!r}, not an HCAE model ({HcaeConfig.model_type!r})"
        )
    return HcaeConfig.from_dict(values)
