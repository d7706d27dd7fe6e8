#!/usr/bin/env bash
# Set up .venv and run the whole test suite offline, the real-data MTEB check included.
#
#   bash scripts/test.sh                 # everything, as CI runs it
#   bash scripts/test.sh -m "not slow"   # skip the tests that take minutes
#
# Tests read the datasets from $HCAE_TEST_DATA_DIR, by default ../shared/data beside the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export HF_HOME="$PWD/.cache/huggingface" MTEB_CACHE="$PWD/.cache/mteb"
export MLFLOW_DISABLE_TELEMETRY=true TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest "$@"
