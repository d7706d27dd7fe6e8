#!/usr/bin/env bash
# Create .venv (Python 3.11) and install hcae with its pinned dependencies into it.
#
#   bash scripts/setup.sh            # the package, the notebook tools and the test tools
#
# torch is pinned in pyproject.toml, so pip takes the CPU build instead of a multi-gigabyte CUDA one.
set -euo pipefail
cd "$(dirname "$0")/.."

python_bin=${PYTHON:-python3.11}
if ! command -v "$python_bin" >/dev/null 2>&1; then
    python_bin=python3
fi
if [ ! -x .venv/bin/python ]; then
    "$python_bin" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test,notebooks]'
.venv/bin/python -m pip check
