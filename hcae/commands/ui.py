"""``hcae ui``: the MLflow UI on 127.0.0.1 for the local tracking store.

Examples::

    hcae ui                                   # http://127.0.0.1:5000 for mlruns/mlflow.db
    hcae ui --port 5001 --study v1_0_vs_v1_1  # also print the link that compares a study's trials

The server runs in MLflow's light mode (one worker, no job runner, no telemetry): with MLflow
3.17's defaults it starts 4 workers and a job runner, which take several GB of memory.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from hcae.errors import HcaeError
from hcae.interrupts import StudyInterrupted, interrupt_handlers
from hcae.tracking import default_tracking_uri

HOST = "127.0.0.1"
DEFAULT_PORT = 5000
# seconds to wait for the server's /health endpoint to respond; it took about 5 s on an idle 2-core machine
READY_TIMEOUT_S = 120
STOP_TIMEOUT_S = 15
LIGHT_MODE_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port on 127.0.0.1 (default: {DEFAULT_PORT})")
    parser.add_argument("--tracking-uri", metavar="URI", help="MLflow store to show (default: $MLFLOW_TRACKING_URI, else mlruns/mlflow.db)")
    parser.add_argument("--study", metavar="NAME", help="also print the link to MLflow's compare view of this study's trials")


def run(args: argparse.Namespace) -> int:
    tracking_uri = args.tracking_uri or default_tracking_uri()
    compare_url = None
    if args.study:
        from hcae.study import study_compare_url

        try:
            compare_url, _ = study_compare_url(args.study, tracking_uri, base_url=f"http://{HOST}:{args.port}")
        except LookupError as error:
            raise HcaeError(str(error)) from None

    # SIGTERM, like Ctrl-C, must stop the server too: it runs in a session of its own
    with interrupt_handlers():
        server = None
        try:
            server = start_ui_server(tracking_uri, args.port)
            print(f"MLflow UI: {server.url} (store: {tracking_uri}); press Ctrl-C to stop", flush=True)
            if compare_url:
                print(f"Trials of study {args.study}: {compare_url}", flush=True)
            code = server.process.wait()
            print(f"hcae ui: mlflow ui exited with code {code}:\n{_tail(server.log_path)}", file=sys.stderr)
            return 1
        except StudyInterrupted as interrupt:
            print(f"hcae ui: stopping on {interrupt.signal_name}", file=sys.stderr)
            return 0
        finally:
            if server is not None:
                server.stop()


@dataclass
class UiServer:
    """A running MLflow UI process that this process started, and its URL."""

    process: subprocess.Popen
    url: str
    log_path: Path

    def stop(self) -> None:
        """Stop the server and the worker it started, which share its process group."""
        if self.process.poll() is None:
            _signal_group(self.process, signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                _signal_group(self.process, signal.SIGKILL)
                self.process.wait()
        self.log_path.unlink(missing_ok=True)


def _signal_group(process: subprocess.Popen, signal_number: int) -> None:
    # the server was started in a session of its own, so its pid is the group id
    try:
        os.killpg(process.pid, signal_number)
    except ProcessLookupError:
        pass


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def _check_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # as servers do, so that connections of a server stopped a moment ago (TIME_WAIT) do not count
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            raise HcaeError(f"port {port} on {HOST} is in use (another MLflow UI?); pass --port with a free port") from None


def start_ui_server(tracking_uri: str, port: int = DEFAULT_PORT, timeout_s: float = READY_TIMEOUT_S) -> UiServer:
    """Start ``mlflow ui`` on 127.0.0.1 in light mode and wait until it responds.

    Raises:
        HcaeError: if the store is a remote server, the port is in use, or the server exits or
            does not respond within ``timeout_s`` (the message ends with its log).
    """
    if tracking_uri.startswith(("http://", "https://")):
        raise HcaeError(f"tracking URI {tracking_uri} is already an MLflow server: open it in a browser instead")
    _check_port_free(port)

    command = [
        sys.executable, "-m", "mlflow", "ui",
        "--backend-store-uri", tracking_uri,
        "--host", HOST,
        "--port", str(port),
        "--workers", "1",
    ]
    if tracking_uri.startswith("sqlite:///"):
        # runs keep their absolute artifact paths; this only sets where new experiments would store theirs
        artifacts = Path(tracking_uri.removeprefix("sqlite:///")).parent / "artifacts"
        command += ["--default-artifact-root", artifacts.as_uri(), "--no-serve-artifacts"]

    log = tempfile.NamedTemporaryFile(prefix="hcae-ui-", suffix=".log", delete=False)
    process = subprocess.Popen(
        command,
        env={**os.environ, **LIGHT_MODE_ENV},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    server = UiServer(process, f"http://{HOST}:{port}", Path(log.name))
    try:
        _wait_until_ready(server, timeout_s)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_until_ready(server: UiServer, timeout_s: float) -> None:
    # no proxy: an http_proxy setting must not route loopback requests elsewhere
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise HcaeError(f"mlflow ui exited with code {server.process.returncode}:\n{_tail(server.log_path)}")
        try:
            with opener.open(f"{server.url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise HcaeError(f"mlflow ui did not respond on {server.url} within {timeout_s:.0f} s:\n{_tail(server.log_path)}")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
