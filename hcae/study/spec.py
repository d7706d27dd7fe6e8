"""Study files: a base run config and the variants, seeds or search space to compare.

A study YAML opens with comment lines that state its hypothesis and the command that runs it,
then has these keys::

    # Hypothesis: v1.1's SwiGLU, LayerScale and prefixes beat v1.0 on dev/mean.
    # Run: hcae ablate ablations/v1_0_vs_v1_1.yaml
    study: v1_0_vs_v1_1            # Optuna study name; default: the file name without .yaml
    base: base.yaml                # a run config file relative to this file, or an inline mapping
    profile: quick                 # smoke, quick or full; replaces the base's profile
    objective:                     # default: {metric: dev/mean, direction: maximize}
      metric: dev/mean             # a dev/ metric that the trial function returns
      direction: maximize          # or minimize
    grid:                          # every variant is run with every seed
      seeds: [0, 1]                # default: the base's seed
      variants:
        v1.0: {model: {preset: v1.0}}
        v1.1: {model: {preset: v1.1}}
        static: {architecture: static}                  # a control trained by the same recipe
        teacher: {architecture: teacher, seeds: [0]}    # evaluated as is; its own seed list
        custom: {kind: my_controls:evaluate_custom}     # another trial function, see below

An optional ``report`` mapping sets how `hcae report` presents the study (see
`hcae.report.ReportPlan`: ``path``, ``step_labels``, ``controls``, ``claims``, ``speed_models``).
Its ``path`` and ``controls`` must name variants of the grid; the rest is checked by the report.

A study has either ``grid`` or ``search``. A search samples run settings with Optuna's TPE
sampler::

    search:
      trials: 20                   # points to evaluate in total, counted over resumes
      seed: 0                      # the run seed of every trial; default: the base's seed
      sampler_seed: 0              # seeds TPE; trial n uses sampler_seed + n (default 0)
      pruner: none                 # or median: stop a trial whose dev curve is below the median
      kind: hcae                   # trial function for every search trial
      space:                       # dotted run-config keys
        model.conv_kernel_size: {choices: [3, 5, 7, 9]}
        training.distill.learning_rate: {low: 1.0e-4, high: 2.0e-3, log: true}
        training.distill.steps: {low: 100, high: 400, step: 100}

A trial's run config is built from the base, the study's profile, the variant's overrides (or
the sampled values) and the seed, in that order. `hcae.run_config` fills the rest from the
profile. ``kind`` names a trial function in `hcae.study.kinds.TRIAL_KINDS` (``hcae``, the
default, trains and evaluates an HCAE model) or gives one as ``module:function``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from hcae.errors import RunConfigError
from hcae.run_config import PROFILES, RunConfig, build_run_config, merge, read_yaml, set_dotted
from hcae.study.kinds import DEFAULT_KIND, validate_kind

STUDY_KEYS = ("study", "base", "profile", "objective", "grid", "search", "report")
GRID_KEYS = ("seeds", "variants")
SEARCH_KEYS = ("trials", "seed", "sampler_seed", "pruner", "kind", "space")
OBJECTIVE_KEYS = ("metric", "direction")
DIRECTIONS = ("maximize", "minimize")
PRUNERS = ("none", "median")
# the variant name of every trial in a search study
SEARCH_VARIANT = "search"
# variant and study names become folder names and MLflow tags
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Objective:
    """The dev metric that Optuna optimises, as named in the trial function's output."""

    metric: str = "dev/mean"
    direction: str = "maximize"


@dataclass(frozen=True)
class Variant:
    """One arm of a grid: a name, a trial kind, the run-config overrides it applies and, if set,
    its own seeds in place of the grid's (a deterministic control needs only one)."""

    name: str
    kind: str = DEFAULT_KIND
    overrides: dict[str, Any] = field(default_factory=dict)
    seeds: tuple[int, ...] | None = None


@dataclass(frozen=True)
class SearchSpace:
    """The ``search`` section: how many points, which sampler seed, pruner and distributions."""

    trials: int
    seed: int
    sampler_seed: int
    pruner: str
    kind: str
    distributions: dict[str, optuna.distributions.BaseDistribution]


@dataclass(frozen=True)
class Point:
    """The coordinates of one trial: a variant and seed, plus sampled values in a search.

    ``params`` is empty for grid points and for search points not sampled yet.
    """

    variant: str
    seed: int
    params: dict[str, Any] = field(default_factory=dict)

    def key(self) -> str:
        """Return a canonical string that is equal for equal points."""
        return json.dumps({"variant": self.variant, "seed": self.seed, "params": self.params}, sort_keys=True)


@dataclass(frozen=True)
class StudySpec:
    """A parsed and validated study file.

    Attributes:
        name: the Optuna study name, also the MLflow parent run's name.
        source: the file it came from, for messages.
        base: the base run values, as the base file or the inline mapping gives them.
        profile: the budget profile of every trial.
        objective: the metric and direction Optuna optimises.
        variants: the grid's variants, in file order; empty for a search.
        seeds: the grid's seeds; empty for a search.
        search: the search section, or None for a grid.
        text: the study file's text, logged with the MLflow parent run.
        description: the file's opening comment block (hypothesis and command).
        report: the file's ``report`` section, empty if it has none.
    """

    name: str
    source: str
    base: dict[str, Any]
    profile: str
    objective: Objective
    variants: tuple[Variant, ...] = ()
    seeds: tuple[int, ...] = ()
    search: SearchSpace | None = None
    text: str = ""
    description: str = ""
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def mode(self) -> str:
        """``grid`` or ``search``."""
        return "search" if self.search is not None else "grid"

    def grid_points(self) -> list[Point]:
        """Return every variant x seed point, variants in file order."""
        return [Point(variant.name, seed) for variant in self.variants for seed in (variant.seeds or self.seeds)]

    def variant(self, name: str) -> Variant:
        """Return the variant called ``name``; a search study has the one variant ``search``."""
        if self.search is not None and name == SEARCH_VARIANT:
            return Variant(SEARCH_VARIANT, kind=self.search.kind)
        for variant in self.variants:
            if variant.name == name:
                return variant
        raise RunConfigError(f"{self.source}: variant {name!r} is not in the study; variants: {[v.name for v in self.variants]}")

    def run_config(self, point: Point) -> RunConfig:
        """Build the run config of one point: base, variant overrides, sampled values, seed."""
        variant = self.variant(point.variant)
        values = merge(self.base, variant.overrides)
        for key, value in point.params.items():
            set_dotted(values, key, value)
        values["seed"] = point.seed
        values["profile"] = self.profile
        values.pop("name", None)
        where = f"variant {point.variant!r}" if self.search is None else f"search point {point.params}"
        return build_run_config(values, source=f"{self.source}: {where}")

    def kinds(self) -> set[str]:
        """Return the trial kinds the study uses."""
        if self.search is not None:
            return {self.search.kind}
        return {variant.kind for variant in self.variants}

    def base_signature(self) -> str:
        """Return a hash of what every search trial shares: the resolved base config, seed, kind, objective and space.

        A resumed search compares it with the stored one, because trials run from another base
        would not be comparable with new ones.
        """
        if self.search is None:
            raise ValueError("base_signature is defined for search studies only")
        base_run = self.run_config(Point(SEARCH_VARIANT, self.search.seed))
        space = {key: optuna.distributions.distribution_to_json(dist) for key, dist in sorted(self.search.distributions.items())}
        values = {
            "base": config_signature(base_run),
            "kind": self.search.kind,
            "objective": [self.objective.metric, self.objective.direction],
            "space": space,
        }
        return _hash(values)

    def validate(self) -> None:
        """Build every run config the study can produce, so a typo fails before any training.

        For a search, each categorical choice and the bounds of each range are built once.

        Raises:
            RunConfigError: naming the variant (or search value) and the key at fault.
        """
        if self.search is None:
            for variant in self.variants:
                self.run_config(Point(variant.name, self.seeds[0]))
            return
        for key, distribution in self.search.distributions.items():
            for value in _probe_values(distribution):
                self.run_config(Point(SEARCH_VARIANT, self.search.seed, {key: value}))


def config_signature(run: RunConfig) -> str:
    """Return a hash of a run config without its name and data folder.

    Trials compare it on resume: a finished point whose config changed since is an error, not a
    silent reuse. The data folder is left out so that a moved data folder does not count.
    """
    values = run.to_dict()
    values.pop("name", None)
    values.pop("data_dir", None)
    return _hash(values)


def _hash(values: Any) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _probe_values(distribution: optuna.distributions.BaseDistribution) -> list[Any]:
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return list(distribution.choices)
    return [distribution.low, distribution.high]


# ---- parsing ----


def load_study_spec(
    path: str | Path,
    *,
    profile: str | None = None,
    study_name: str | None = None,
    data_dir: str | Path | None = None,
) -> StudySpec:
    """Read, parse and validate a study YAML file.

    Args:
        path: the study file.
        profile: replaces the file's profile. Unless ``study_name`` is given, the study name gets
            the suffix ``-<profile>`` so that, for example, a smoke run never counts as a finished
            point of the real study.
        study_name: replaces the study name from the file.
        data_dir: the data folder of every trial (sets ``data_dir`` in the base).

    Raises:
        RunConfigError: on a missing file, invalid YAML, an unknown key or an invalid run config,
            with the key and value at fault.
    """
    path = Path(path)
    values = read_yaml(path)
    text = path.read_text(encoding="utf-8")
    return parse_study_spec(
        values,
        source=str(path),
        base_dir=path.parent,
        default_name=path.stem,
        text=text,
        profile=profile,
        study_name=study_name,
        data_dir=data_dir,
    )


def parse_study_spec(
    values: dict[str, Any],
    *,
    source: str,
    base_dir: Path,
    default_name: str,
    text: str = "",
    profile: str | None = None,
    study_name: str | None = None,
    data_dir: str | Path | None = None,
) -> StudySpec:
    """Build a validated `StudySpec` from a study mapping; see `load_study_spec` for the arguments."""
    _check_keys(values, STUDY_KEYS, source, "")
    if "base" not in values:
        raise RunConfigError(f"{source}: missing key 'base': give a run config file (base: base.yaml) or an inline mapping")
    if ("grid" in values) == ("search" in values):
        raise RunConfigError(f"{source}: give exactly one of 'grid' (variants x seeds) and 'search' (an Optuna search space)")

    base = _read_base(values["base"], source, base_dir)
    file_profile = values.get("profile", base.get("profile", "quick"))
    chosen_profile = profile or file_profile
    if chosen_profile not in PROFILES:
        raise RunConfigError(f"{source}: profile={chosen_profile!r} is invalid; allowed: {sorted(PROFILES)}")
    if data_dir is not None:
        base["data_dir"] = str(data_dir)

    name = study_name or values.get("study", default_name)
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise RunConfigError(f"{source}: study={name!r} is invalid: use letters, digits, '.', '_' and '-'")
    if study_name is None and profile is not None and profile != file_profile:
        name = f"{name}-{profile}"

    objective = _parse_objective(values.get("objective", {}), source)
    base_seed = base.get("seed", 0)
    if "grid" in values:
        variants, seeds = _parse_grid(values["grid"], source, base_seed)
        search = None
    else:
        variants, seeds = (), ()
        search = _parse_search(values["search"], source, base_seed)

    report = _parse_report(values.get("report"), source, variants)
    spec = StudySpec(
        name=name,
        source=source,
        base=base,
        profile=chosen_profile,
        objective=objective,
        variants=variants,
        seeds=seeds,
        search=search,
        text=text,
        description=opening_comment(text),
        report=report,
    )
    spec.validate()
    return spec


def opening_comment(text: str) -> str:
    """Return the comment lines at the top of a YAML text, without their ``#``."""
    lines = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped.startswith("#"):
            break
        lines.append(stripped.lstrip("#").strip())
    return "\n".join(lines).strip()


def _check_keys(values: dict[str, Any], allowed: tuple[str, ...], source: str, where: str) -> None:
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise RunConfigError(f"{source}: unknown key {where + str(unknown[0])!r}; allowed keys here: {list(allowed)}")


def _read_base(base: Any, source: str, base_dir: Path) -> dict[str, Any]:
    if isinstance(base, str):
        base_path = base_dir / base
        if not base_path.is_file():
            raise RunConfigError(f"{source}: base={base!r} not found (looked for {base_path}); the path is relative to the study file")
        return read_yaml(base_path)
    if isinstance(base, dict):
        return dict(base)
    raise RunConfigError(f"{source}: base={base!r} is invalid: give a run config file name or a mapping")


def _parse_report(report: Any, source: str, variants: tuple[Variant, ...]) -> dict[str, Any]:
    if report is None:
        return {}
    if not isinstance(report, dict):
        raise RunConfigError(f"{source}: report={report!r} is invalid: it must be a mapping such as {{path: [v1.0, v1.1]}}")
    if not variants:
        return dict(report)
    known = [variant.name for variant in variants]
    path = report.get("path") or []
    controls = report.get("controls") or {}
    if not isinstance(path, list) or not isinstance(controls, dict):
        raise RunConfigError(f"{source}: report.path must be a list of variants and report.controls a mapping of variant to variant")
    named = [("report.path", name) for name in path]
    named += [("report.controls", name) for pair in controls.items() for name in pair]
    for key, name in named:
        if str(name) not in known:
            raise RunConfigError(f"{source}: {key} names variant {name!r}, which is not in grid.variants {known}")
    return dict(report)


def _parse_objective(values: Any, source: str) -> Objective:
    if not isinstance(values, dict):
        raise RunConfigError(f"{source}: objective={values!r} is invalid: use {{metric: dev/mean, direction: maximize}}")
    _check_keys(values, OBJECTIVE_KEYS, source, "objective.")
    metric = values.get("metric", Objective.metric)
    direction = values.get("direction", Objective.direction)
    if not isinstance(metric, str) or not metric.startswith("dev/"):
        raise RunConfigError(
            f"{source}: objective.metric={metric!r} is invalid: use a dev/ metric such as dev/mean, "
            f"because choosing variants on test scores leaks the test set into the comparison"
        )
    if direction not in DIRECTIONS:
        raise RunConfigError(f"{source}: objective.direction={direction!r} is invalid; allowed: {list(DIRECTIONS)}")
    return Objective(metric, direction)


def _parse_seeds(seeds: Any, source: str, key: str) -> tuple[int, ...]:
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise RunConfigError(f"{source}: {key}={seeds!r} is invalid: give a list of integers such as [0, 1, 2]")
    if len(set(seeds)) != len(seeds):
        raise RunConfigError(f"{source}: {key}={seeds!r} repeats a seed")
    return tuple(seeds)


def _parse_grid(grid: Any, source: str, base_seed: int) -> tuple[tuple[Variant, ...], tuple[int, ...]]:
    if not isinstance(grid, dict):
        raise RunConfigError(f"{source}: grid must be a mapping with 'variants' and optionally 'seeds'")
    _check_keys(grid, GRID_KEYS, source, "grid.")
    seeds = _parse_seeds(grid.get("seeds", [base_seed]), source, "grid.seeds")

    raw_variants = grid.get("variants")
    if not isinstance(raw_variants, dict) or not raw_variants:
        raise RunConfigError(f"{source}: grid.variants must map variant names to run-config overrides, e.g. {{v1.0: {{model: {{preset: v1.0}}}}}}")
    variants = []
    for name, overrides in raw_variants.items():
        name = str(name)
        if not NAME_PATTERN.match(name):
            raise RunConfigError(f"{source}: variant name {name!r} is invalid: use letters, digits, '.', '_' and '-'")
        overrides = {} if overrides is None else overrides
        if not isinstance(overrides, dict):
            raise RunConfigError(f"{source}: variant {name!r} must be a mapping of run-config overrides, got {overrides!r}")
        overrides = dict(overrides)
        kind = overrides.pop("kind", DEFAULT_KIND)
        validate_kind(kind, f"{source}: variant {name!r}")
        own_seeds = overrides.pop("seeds", None)
        if own_seeds is not None:
            own_seeds = _parse_seeds(own_seeds, source, f"grid.variants.{name}.seeds")
        variants.append(Variant(name, kind, overrides, own_seeds))
    return tuple(variants), seeds


def _parse_search(search: Any, source: str, base_seed: int) -> SearchSpace:
    if not isinstance(search, dict):
        raise RunConfigError(f"{source}: search must be a mapping with 'trials' and 'space'")
    _check_keys(search, SEARCH_KEYS, source, "search.")
    trials = search.get("trials")
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise RunConfigError(f"{source}: search.trials={trials!r} is invalid: give the number of trials, at least 1")
    seed = _parse_seeds(search.get("seed", base_seed), source, "search.seed")
    if len(seed) != 1:
        raise RunConfigError(f"{source}: search.seed={search.get('seed')!r} is invalid: a search runs one seed")
    sampler_seed = search.get("sampler_seed", 0)
    if not isinstance(sampler_seed, int) or isinstance(sampler_seed, bool):
        raise RunConfigError(f"{source}: search.sampler_seed={sampler_seed!r} is invalid: it must be an integer")
    pruner = search.get("pruner", "none")
    if pruner not in PRUNERS:
        raise RunConfigError(f"{source}: search.pruner={pruner!r} is invalid; allowed: {list(PRUNERS)}")
    kind = search.get("kind", DEFAULT_KIND)
    validate_kind(kind, f"{source}: search")

    space = search.get("space")
    if not isinstance(space, dict) or not space:
        raise RunConfigError(f"{source}: search.space must map dotted run-config keys to {{choices: [...]}} or {{low:, high:}}")
    distributions = {str(key): _parse_distribution(str(key), spec, source) for key, spec in space.items()}
    return SearchSpace(trials, seed[0], sampler_seed, pruner, kind, distributions)


def _parse_distribution(key: str, spec: Any, source: str) -> optuna.distributions.BaseDistribution:
    where = f"search.space.{key}"
    if not isinstance(spec, dict):
        raise RunConfigError(f"{source}: {where}={spec!r} is invalid: use {{choices: [...]}} or {{low:, high:, log:, step:}}")
    if "choices" in spec:
        _check_keys(spec, ("choices",), source, f"{where}.")
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise RunConfigError(f"{source}: {where}.choices={choices!r} is invalid: give a non-empty list")
        if not all(choice is None or isinstance(choice, (bool, int, float, str)) for choice in choices):
            raise RunConfigError(f"{source}: {where}.choices={choices!r} is invalid: choices must be numbers, strings, booleans or null")
        return optuna.distributions.CategoricalDistribution(choices)

    _check_keys(spec, ("low", "high", "log", "step"), source, f"{where}.")
    if "low" not in spec or "high" not in spec:
        raise RunConfigError(f"{source}: {where} needs 'low' and 'high' (or 'choices')")
    low, high = _number(spec["low"], source, f"{where}.low"), _number(spec["high"], source, f"{where}.high")
    log = spec.get("log", False)
    step = spec.get("step")
    if not isinstance(log, bool):
        raise RunConfigError(f"{source}: {where}.log={log!r} is invalid: use true or false")
    if not low < high:
        raise RunConfigError(f"{source}: {where} has low={low!r} >= high={high!r}")
    if log and low <= 0:
        raise RunConfigError(f"{source}: {where} has log: true with low={low!r}; a log scale needs low > 0")
    if log and step is not None:
        raise RunConfigError(f"{source}: {where} sets both log and step; Optuna accepts only one of them")
    if step is not None:
        step = _number(step, source, f"{where}.step")
        if step <= 0:
            raise RunConfigError(f"{source}: {where}.step={step!r} is invalid: it must be positive")

    integers = all(isinstance(value, int) for value in (low, high)) and (step is None or isinstance(step, int))
    if integers:
        return optuna.distributions.IntDistribution(low, high, log=log, step=step or 1)
    return optuna.distributions.FloatDistribution(float(low), float(high), log=log, step=None if step is None else float(step))


def _number(value: Any, source: str, key: str) -> int | float:
    # YAML 1.1 reads 1e-4 (no dot) as a string, so numeric strings are accepted
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RunConfigError(f"{source}: {key}={value!r} is invalid: it must be a number")
    return value
