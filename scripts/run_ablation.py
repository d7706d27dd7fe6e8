"""Run or resume an ablation study; the same as ``hcae ablate`` for those who prefer scripts.

    python scripts/run_ablation.py ablations/v1_0_vs_v1_1.yaml
    python scripts/run_ablation.py ablations/v1_0_vs_v1_1.yaml --profile smoke --workers 2

Every option of ``hcae ablate`` works here (``--help`` lists them). Exit status: 0 when every
point is complete, 1 when some point failed or is missing, 2 on an invalid study file,
128 + the signal number after SIGINT or SIGTERM.
"""

from __future__ import annotations

import sys

from hcae.cli import main

if __name__ == "__main__":
    sys.exit(main(["ablate", *sys.argv[1:]]))
