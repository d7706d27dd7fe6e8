"""The Optuna side of a study: storage, the trial queue, process identity and heartbeats.

Grid points are queued as WAITING trials (`optuna.Study.enqueue_trial`) by the process that
plans the study, and workers take them with `claim_waiting_trial`. Taking a trial is one
conditional update from WAITING to RUNNING, which the storage grants to one process only, so two
workers never run the same queued trial.

Trial user attributes written here and read by the runner and the result tables:

- ``variant``, ``seed``, ``kind``, ``point``: the point, set when the trial is queued.
- ``uid``: a unique id, also the ``hcae.trial_uid`` tag of the trial's MLflow run.
- ``host``, ``pid``, ``pid_start_ticks``: the process that took the trial.
- ``error``, ``error_type``: why a trial failed; ``interrupted``: the signal or reason when it was
  stopped from outside; ``duplicate_of``: the trial number it repeated.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

logger = logging.getLogger(__name__)

DEFAULT_STORAGE_NAME = "optuna.db"
# storage arguments ending like this are journal files, not database URLs
JOURNAL_SUFFIXES = (".log", ".journal", ".jsonl")
# seconds a SQLite connection waits for a lock held by another worker before it fails
SQLITE_LOCK_TIMEOUT_S = 120
# attempts to take a queued trial when the storage reports a transient error
CLAIM_ATTEMPTS = 20

# Trial statuses in tables are Optuna's COMPLETE, PRUNED, RUNNING and WAITING, and these three,
# which split Optuna's FAIL by the attributes recorded with it (see `trial_status`).
FAILED = "FAILED"
INTERRUPTED = "INTERRUPTED"
DUPLICATE = "DUPLICATE"


def default_storage_url(store_dir: str | Path = "mlruns") -> str:
    """Return the SQLite URL of ``<store_dir>/optuna.db`` as an absolute path."""
    store = Path(store_dir).resolve()
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store / DEFAULT_STORAGE_NAME}"


def is_journal(storage_url: str) -> bool:
    """Return whether the storage argument names a journal file rather than a database."""
    return "://" not in storage_url and storage_url.endswith(JOURNAL_SUFFIXES)


def open_storage(storage_url: str, heartbeat_interval: int | None = None) -> BaseStorage:
    """Open an Optuna storage: an RDB URL, or a journal file (``*.log``, ``*.journal``, ``*.jsonl``).

    Args:
        storage_url: ``sqlite:///...``, ``postgresql://...``, ``mysql://...`` or a journal path.
        heartbeat_interval: seconds between heartbeats of a running trial, for RDB storages. A
            trial without a heartbeat for ``4 * heartbeat_interval`` seconds counts as stale.
            None turns heartbeats off.
    """
    if is_journal(storage_url):
        path = Path(storage_url).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))

    engine_kwargs = {}
    if storage_url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": SQLITE_LOCK_TIMEOUT_S}}
    with warnings.catch_warnings():
        # heartbeat_interval is marked experimental in Optuna 5.1
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = RDBStorage(
            storage_url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=heartbeat_interval or None,
            grace_period=4 * heartbeat_interval if heartbeat_interval else None,
        )
    if storage_url.startswith("sqlite"):
        _lock_sqlite_on_begin(storage)
    return storage


def _lock_sqlite_on_begin(storage: RDBStorage) -> None:
    """Make every SQLite transaction take the write lock when it begins.

    Python's sqlite3 module opens a transaction only before the first write, so the state check
    in `RDBStorage.set_trial_state_values` reads outside the transaction that then writes. Two
    processes can both see a WAITING trial and both set it RUNNING. With Optuna 5.1 on SQLite,
    two processes racing over 400 queued trials both took one trial in each of three runs
    without this hook, and none with it. ``BEGIN IMMEDIATE`` takes the write lock before the
    read, which makes the check and the write atomic; other processes wait up to
    `SQLITE_LOCK_TIMEOUT_S` for the lock.
    """
    from sqlalchemy import event

    engine = storage.engine

    @event.listens_for(engine, "connect")
    def _disable_implicit_begin(dbapi_connection, connection_record) -> None:  # noqa: ANN001
        # the sqlite3 module opens transactions itself unless isolation_level is None
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection) -> None:  # noqa: ANN001
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    # connections opened during the storage's set-up lack the hook
    engine.dispose()


def hide_password(storage_url: str) -> str:
    """Return a storage URL with any password replaced by ``***``, for logs and MLflow tags."""
    if "://" not in storage_url:
        return storage_url
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(storage_url).render_as_string(hide_password=True)
    except ArgumentError:
        # a URL that SQLAlchemy cannot parse is shown without its credentials part
        scheme, _, rest = storage_url.partition("://")
        return f"{scheme}://***@{rest.rpartition('@')[2]}" if "@" in rest else storage_url


def heartbeat_enabled(storage: BaseStorage) -> bool:
    """Return whether running trials of this storage record heartbeats."""
    return isinstance(storage, RDBStorage) and storage.get_heartbeat_interval() is not None


# ---- which process runs a trial ----


@dataclass(frozen=True)
class ProcessIdentity:
    """A process: its host name, pid and, on Linux, its start time in clock ticks since boot.

    The start time distinguishes a live process from a later one that reuses the pid.
    """

    host: str
    pid: int
    start_ticks: int | None

    @classmethod
    def current(cls) -> ProcessIdentity:
        """Return the identity of the calling process."""
        pid = os.getpid()
        return cls(socket.gethostname(), pid, _process_start_ticks(pid))

    def as_attrs(self) -> dict[str, object]:
        """Return the identity as trial user attributes."""
        return {"host": self.host, "pid": self.pid, "pid_start_ticks": self.start_ticks}


def _process_start_ticks(pid: int) -> int | None:
    stat = _read_proc_stat(pid)
    # fields after the command name; the start time is field 22 of proc_pid_stat(5)
    return int(stat[19]) if stat is not None and len(stat) > 19 else None


def _read_proc_stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name in parentheses may contain spaces, so split after its closing bracket
    return text.rpartition(")")[2].split()


def is_process_alive(pid: int, start_ticks: int | None) -> bool:
    """Return whether the process ``pid`` of this host is alive and is the one that started then.

    A zombie (exited, not yet reaped) counts as dead.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        # the process exists but belongs to another user
        pass
    stat = _read_proc_stat(pid)
    if stat is None:
        # no /proc: the pid exists, and that is all that can be checked
        return True
    if stat[0] == "Z":
        return False
    return start_ticks is None or int(stat[19]) == start_ticks


def running_trial_is_stale(trial: FrozenTrial, host: str) -> bool:
    """Return whether a RUNNING trial belongs to a dead process on ``host``.

    Trials of other hosts are never judged here; heartbeats cover them.
    """
    attrs = trial.user_attrs
    if attrs.get("host") != host or "pid" not in attrs:
        return False
    return not is_process_alive(int(attrs["pid"]), attrs.get("pid_start_ticks"))


# ---- the trial queue ----


def claim_waiting_trial(study: optuna.Study, storage: BaseStorage, identity: ProcessIdentity) -> FrozenTrial | None:
    """Take the oldest WAITING trial of the study for this process, or return None if none is left.

    The state change to RUNNING succeeds for one process only. Another process that took the
    same trial first makes this one move on to the next.
    """
    study_id = storage.get_study_id_from_name(study.study_name)
    for attempt in range(CLAIM_ATTEMPTS):
        try:
            return _claim_once(study, storage, study_id, identity)
        except optuna.exceptions.StorageInternalError as error:
            # a transient database error, for example a lock timeout under heavy contention
            delay = random.uniform(0.5, 2.0) * (attempt + 1)
            logger.warning("taking a queued trial failed (%s); retrying in %.1f s", error, delay)
            time.sleep(delay)
    raise optuna.exceptions.StorageInternalError(f"could not take a queued trial after {CLAIM_ATTEMPTS} attempts")


def _claim_once(study: optuna.Study, storage: BaseStorage, study_id: int, identity: ProcessIdentity) -> FrozenTrial | None:
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    for trial in sorted(waiting, key=lambda item: item.number):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        try:
            taken = storage.set_trial_state_values(trial_id, state=TrialState.RUNNING)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
        if not taken:
            continue
        for key, value in identity.as_attrs().items():
            storage.set_trial_user_attr(trial_id, key, value)
        storage.set_trial_user_attr(trial_id, "started_at", time.time())
        return storage.get_trial(trial_id)
    return None


def trial_status(trial: FrozenTrial) -> str:
    """Return COMPLETE, PRUNED, RUNNING, WAITING, FAILED, INTERRUPTED or DUPLICATE.

    A FAIL trial with an ``error`` attribute failed on its own. The runner records the error
    before it fails a trial, so any other FAIL trial was stopped from outside (a signal, a dead
    process, a missed heartbeat).
    """
    if trial.state != TrialState.FAIL:
        return trial.state.name
    attrs = trial.user_attrs
    if "duplicate_of" in attrs:
        return DUPLICATE
    if "interrupted" in attrs or "error" not in attrs:
        return INTERRUPTED
    return FAILED


def fail_trial(storage: BaseStorage, study: optuna.Study, number: int, attrs: dict[str, object]) -> bool:
    """Record ``attrs`` on a trial and set it to FAIL; return False if it had already finished."""
    study_id = storage.get_study_id_from_name(study.study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
    try:
        for key, value in attrs.items():
            storage.set_trial_user_attr(trial_id, key, value)
        return storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False


class HeartbeatThread:
    """Record a running trial's heartbeat every interval, in a daemon thread.

    Optuna records heartbeats itself only inside `optuna.Study.optimize`, which the study runner
    does not use. Without heartbeats on the storage this does nothing.
    """

    def __init__(self, storage: BaseStorage, trial_id: int) -> None:
        self.storage = storage
        self.trial_id = trial_id
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _beat(self, interval: int) -> None:
        while not self._stop.is_set():
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception as error:  # a missed beat is retried at the next interval
                logger.warning("recording the heartbeat of trial id %d failed: %s", self.trial_id, error)
            self._stop.wait(interval)

    @contextmanager
    def running(self) -> Iterator[None]:
        """Beat while the block runs."""
        if heartbeat_enabled(self.storage):
            interval = self.storage.get_heartbeat_interval()
            self._thread = threading.Thread(target=self._beat, args=(interval,), daemon=True, name="hcae-heartbeat")
            self._thread.start()
        try:
            yield
        finally:
            self._stop.set()
            if self._thread is not None:
                self._thread.join(timeout=30)
