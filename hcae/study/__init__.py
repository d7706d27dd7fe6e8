"""Optuna-scheduled studies of train-and-evaluate trials, tracked as MLflow parent and child runs.

A study file (see `hcae.study.spec`) names a base run config and a grid of variants x seeds or
an Optuna search space. `run_study` runs it, or resumes it: finished points are not run again,
interrupted ones are, and failed ones only when asked. From a notebook::

    from hcae.study import load_study_runs, load_study_spec, run_study

    result = run_study(load_study_spec("ablations/v1_0_vs_v1_1.yaml", profile="smoke"))
    print(result.format_summary())
    runs = load_study_runs("v1_0_vs_v1_1-smoke")   # a DataFrame of the trials' MLflow runs
"""

from hcae.interrupts import StudyInterrupted
from hcae.study.kinds import TRIAL_KINDS, resolve_trial_function
from hcae.study.results import StudyResult, compare_runs_url, load_study_runs, study_compare_url
from hcae.study.runner import StudyOptions, run_study
from hcae.study.spec import Objective, Point, StudySpec, Variant, load_study_spec, parse_study_spec

__all__ = [
    "TRIAL_KINDS",
    "Objective",
    "Point",
    "StudyInterrupted",
    "StudyOptions",
    "StudyResult",
    "StudySpec",
    "Variant",
    "compare_runs_url",
    "load_study_runs",
    "load_study_spec",
    "parse_study_spec",
    "resolve_trial_function",
    "run_study",
    "study_compare_url",
]
