"""Parameter counts of an HCAE model, by part and by mixer kind."""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch

from hcae.modeling import HcaeConfig, HcaeModel


def count_parameters(config: HcaeConfig) -> dict[str, Any]:
    """Count the parameters of the model a config builds, without allocating its weights.

    Returns:
        A JSON-ready dict: ``total_params``, ``embedding_params`` (token embeddings),
        ``position_embedding_params``, ``non_embedding_params`` (everything but token and position
        embeddings), ``by_mixer`` (per mixer kind: layers, mixer parameters, whole-block parameters)
        and ``layers`` (per layer: index, mixer, block parameters).
    """
    # the meta device gives shapes without memory, so even large variants are counted at once
    with torch.device("meta"):
        model = HcaeModel(config)

    def numel(module: torch.nn.Module) -> int:
        return sum(parameter.numel() for parameter in module.parameters())

    token = model.embeddings.word_embeddings.weight.numel()
    position = model.embeddings.position_embeddings.weight.numel()
    total = numel(model)

    layers = []
    by_mixer: dict[str, dict[str, int]] = {}
    for index, block in enumerate(model.layers):
        layers.append({"index": index, "mixer": block.mixer_type, "params": numel(block)})
        entry = by_mixer.setdefault(block.mixer_type, {"layers": 0, "mixer_params": 0, "block_params": 0})
        entry["layers"] += 1
        entry["mixer_params"] += numel(block.mixer)
        entry["block_params"] += numel(block)

    return {
        "layer_summary": config.layer_summary(),
        "mixer_types": list(config.mixer_types),
        "total_params": total,
        "embedding_params": token,
        "position_embedding_params": position,
        "non_embedding_params": total - token - position,
        "feed_forward": config.feed_forward,
        "feed_forward_hidden_size": config.feed_forward_hidden_size,
        "feed_forward_params": sum(numel(block.feed_forward) for block in model.layers),
        "layer_scale_init": config.layer_scale_init,
        "prompts": dict(config.prompts),
        "by_mixer": by_mixer,
        "layers": layers,
    }


def format_description(counts: dict[str, Any]) -> str:
    """Render `count_parameters` output as an aligned text table."""

    def millions(value: int) -> str:
        return f"{value:>12,}  ({value / 1e6:6.2f}M)"

    kinds = Counter(counts["mixer_types"])
    lines = [
        f"layers        {counts['layer_summary']}  ({sum(kinds.values())} layers)",
        f"order         {' '.join(counts['mixer_types'])}",
        f"feed-forward  {counts['feed_forward']} (hidden width {counts['feed_forward_hidden_size']})",
        f"LayerScale    {counts['layer_scale_init'] if counts['layer_scale_init'] is not None else 'off'}",
        f"prompts       {counts['prompts'] or 'none'}",
        "",
        f"total params            {millions(counts['total_params'])}",
        f"token embeddings        {millions(counts['embedding_params'])}",
        f"position embeddings     {millions(counts['position_embedding_params'])}",
        f"non-embedding           {millions(counts['non_embedding_params'])}",
        f"feed-forward (all)      {millions(counts['feed_forward_params'])}",
    ]
    for kind, entry in counts["by_mixer"].items():
        lines.append(f"{kind} mixers ({entry['layers']})".ljust(24) + millions(entry["mixer_params"]))
        lines.append(f"{kind} blocks ({entry['layers']})".ljust(24) + millions(entry["block_params"]))
    return "\n".join(lines)
