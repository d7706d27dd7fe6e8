#!/usr/bin/env bash
# Set up .venv and run the main job: the v1.0 vs v1.1 study at the quick profile on the real data.
#
#   HCAE_DATA_DIR=../shared/data bash scripts/main.sh          # about 17 minutes on 2 CPU cores
#   HCAE_DATA_DIR=../shared/data bash scripts/main.sh --workers 2
#
# Running it again resumes: finished trials are not trained again. Extra arguments go to
# `hcae ablate`. Models and datasets are read offline (from the installed all-MiniLM-L6-v2 package
# and $HCAE_DATA_DIR); set HF_HUB_OFFLINE=0 to allow downloads from the Hugging Face hub.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} HF_DATASETS_OFFLINE=${HF_DATASETS_OFFLINE:-${HF_HUB_OFFLINE:-1}}
export MLFLOW_DISABLE_TELEMETRY=true TOKENIZERS_PARALLELISM=false
exec .venv/bin/hcae ablate ablations/v1_0_vs_v1_1.yaml "$@"
