"""Shared fixtures. Tests run offline and read the real datasets from a data folder.

The data folder is ``$HCAE_TEST_DATA_DIR`` if set, else ``../shared/data`` beside the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# never reach for the hub from a test, and keep every cache inside the work tree
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HOME", str(REPO_ROOT / ".cache" / "huggingface"))
os.environ.setdefault("MTEB_CACHE", str(REPO_ROOT / ".cache" / "mteb"))
os.environ.setdefault("HCAE_CACHE_DIR", str(REPO_ROOT / ".cache" / "hcae"))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _find_data_dir() -> Path:
    configured = os.environ.get("HCAE_TEST_DATA_DIR")
    return Path(configured) if configured else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data folder, laid out as ``stsb/``, ``scifact/``, ``nli/``, ``sentences/`` ..."""
    path = _find_data_dir()
    if not (path / "stsb").is_dir():
        pytest.fail(f"test data folder {path} has no stsb/: set HCAE_TEST_DATA_DIR to the data folder")
    return path
