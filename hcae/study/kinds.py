"""Trial kinds: which function runs a trial of a study variant.

Every trial function has the signature of `hcae.training.run_tracked`::

    fn(run: RunConfig, store: TrackingStore, output_dir: Path, parent_run_id: str | None = None,
       tags: dict[str, str] | None = None,
       reporter: Callable[[float, int], None] | None = None) -> dict[str, float]

The function creates one MLflow run nested under ``parent_run_id`` with ``tags``, closes it as
FINISHED, FAILED (with an ``hcae.error`` tag) or KILLED (on KeyboardInterrupt or SystemExit),
re-raises what it caught, and returns the final scores with ``dev/...`` and ``test/...`` keys. It
may call ``reporter(dev_score, step)`` during training, and the reporter may raise
`optuna.TrialPruned`. A function that also accepts ``on_start`` gets a callback to call with the
MLflow run id as soon as the run exists.

A variant's ``kind`` is a key of `TRIAL_KINDS` or a ``module:function`` import path, so that
controls that do not train an HCAE model (a teacher evaluated as is, a static-embedding model)
can join a study without changing this package.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from hcae.errors import RunConfigError

TrialFunction = Callable[..., dict[str, float]]

DEFAULT_KIND = "hcae"

# kind name -> "module:function"; imported only when a study uses the kind
TRIAL_KINDS: dict[str, str] = {
    "hcae": "hcae.training:run_tracked",
}


def validate_kind(kind: Any, where: str) -> None:
    """Check that ``kind`` is a registered name or a ``module:function`` path, without importing it."""
    if not isinstance(kind, str) or (kind not in TRIAL_KINDS and ":" not in kind):
        raise RunConfigError(
            f"{where}: kind={kind!r} is invalid; use one of {sorted(TRIAL_KINDS)} or a 'module:function' import path"
        )


def resolve_trial_function(kind: str) -> TrialFunction:
    """Import and return the trial function of a kind.

    Raises:
        RunConfigError: if the module or the function cannot be imported.
    """
    validate_kind(kind, "trial kind")
    target = TRIAL_KINDS.get(kind, kind)
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise RunConfigError(f"trial kind {kind!r}: cannot import module {module_name!r} ({error})") from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise RunConfigError(f"trial kind {kind!r}: module {module_name!r} has no function {attribute!r}")
    return function
