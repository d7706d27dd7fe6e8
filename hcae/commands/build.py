"""``hcae build``: a randomly initialised model as a sentence-transformers folder."""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

import torch

from hcae.embedding import DEFAULT_MAX_SEQ_LENGTH, build_sentence_transformer
from hcae.errors import HcaeError
from hcae.presets import PRESETS, load_model_config

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        metavar="PRESET_OR_CONFIG",
        help=f"a preset ({', '.join(PRESETS)}), a model/run YAML file or a config.json",
    )
    parser.add_argument("--out", required=True, type=Path, help="folder to write; must not exist or be empty")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random initialisation (default 0)")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder (default: bert-base-uncased, bundled)")
    parser.add_argument(
        "--max-seq-length", type=int, default=DEFAULT_MAX_SEQ_LENGTH, help="truncation length in tokens (default 256)"
    )


def run(args: argparse.Namespace) -> int:
    out: Path = args.out
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise HcaeError(f"--out {out} already exists and is not an empty folder; choose a new folder")
    config = load_model_config(args.model)

    # write into a sibling scratch folder and rename at the end, so an error leaves no half model
    scratch = out.with_name(f".{out.name}.partial")
    shutil.rmtree(scratch, ignore_errors=True)
    torch.manual_seed(args.seed)
    try:
        build_sentence_transformer(config, args.tokenizer, args.max_seq_length, folder=scratch)
        if out.exists():
            out.rmdir()
        scratch.rename(out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    logger.info("wrote %s (%s)", out, config.layer_summary())
    print(f"wrote {out}: {config.layer_summary()}; load it with SentenceTransformer({str(out)!r}, trust_remote_code=True)")
    return 0
