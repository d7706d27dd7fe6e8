"""Screenshot MLflow's compare view of a study's trials in headless Chromium.

    python scripts/screenshot_ui.py --study v1_0_vs_v1_1-smoke
    python scripts/screenshot_ui.py --study v1_0_vs_v1_1 --url http://127.0.0.1:5000 --output docs/results/mlflow_compare.png

Without ``--url`` the script starts ``hcae ui`` on a free port of 127.0.0.1 and stops it at the
end. It opens the compare-runs page of the study's complete trial runs, waits until the page
shows every run name and the objective metric, and saves a PNG. Chromium runs headless with a
fresh profile, and every host name except the loopback fails to resolve, so the page can reach
nothing but the local server.

Needs the Debian packages ``chromium`` and ``chromium-driver`` (``apt-get install -y chromium
chromium-driver``) and the ``selenium`` Python package.

Exit status: 0 when the page showed the runs, 1 when it did not (a screenshot of what it showed
is saved beside the output as ``*-failed.png``), 2 on invalid input or a missing browser.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

from hcae.commands.ui import UiServer, free_port, start_ui_server
from hcae.errors import HcaeError
from hcae.study import load_study_runs, study_compare_url
from hcae.tracking import default_tracking_uri

logger = logging.getLogger("screenshot_ui")

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    # every host name but the loopback resolves to nothing
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1, EXCLUDE localhost",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", required=True, help="study name (the hcae.study tag of its MLflow runs)")
    parser.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else mlruns/mlflow.db)")
    parser.add_argument("--url", help="an MLflow UI already running on the loopback, e.g. http://127.0.0.1:5000")
    parser.add_argument("--output", type=Path, default=Path("docs/results/mlflow_compare.png"), help="PNG to write (default: %(default)s)")
    parser.add_argument("--metric", default="dev/mean", help="a metric name the page must show (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for the page to render (default: %(default)s)")
    parser.add_argument("--window-size", default="1600,2000", help="browser window WIDTH,HEIGHT in pixels (default: %(default)s)")
    return parser.parse_args(argv)


def _find_executable(names: tuple[str, ...], package: str) -> str:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    raise HcaeError(f"{' or '.join(names)} not found on PATH; install it with: apt-get install -y {package}")


def _open_driver(user_data_dir: str, window_size: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _find_executable(("chromium", "chromium-browser"), "chromium")
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={user_data_dir}")
    options.add_argument(f"--window-size={window_size}")
    # an explicit driver path keeps Selenium Manager from looking for (and downloading) a driver
    service = Service(executable_path=_find_executable(("chromedriver",), "chromium-driver"))
    return webdriver.Chrome(options=options, service=service)


def _show_parameter_differences(driver) -> None:
    """Turn on "Show diff only" of the parameter table, so that it lists what the variants change."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    switches = driver.find_elements(By.XPATH, "//*[@role='switch']")
    if not switches:
        logger.info("the page has no 'Show diff only' switch; the parameter table lists every parameter")
        return
    try:
        switches[0].click()
    except WebDriverException as error:  # the full parameter table is still a valid picture
        logger.info("could not turn on 'Show diff only': %s", error.msg)


def _close_side_panels(driver) -> None:
    """Close MLflow 3's assistant panel, which opens beside the page and covers part of it."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    for button in driver.find_elements(By.XPATH, "//button[@aria-label='Close']"):
        try:
            if button.is_displayed():
                button.click()
        except WebDriverException as error:  # a panel that stays open only makes the picture narrower
            logger.info("could not close a side panel: %s", error.msg)
    time.sleep(1)


def capture(url: str, expected: list[str], output: Path, timeout: float, window_size: str) -> bool:
    """Open ``url``, wait until the page text contains every string in ``expected``, save a PNG.

    Returns whether the page showed them all. On a timeout the screenshot goes to
    ``<output stem>-failed.png`` so that a good image is never replaced by a broken one.
    """
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hcae-chromium-") as profile:
        driver = _open_driver(profile, window_size)
        try:
            driver.get(url)

            def page_shows_all(current) -> bool:
                text = current.find_element(By.TAG_NAME, "body").text
                return all(item in text for item in expected)

            try:
                WebDriverWait(driver, timeout, poll_frequency=0.5).until(page_shows_all)
            except TimeoutException:
                text = driver.find_element(By.TAG_NAME, "body").text
                missing = [item for item in expected if item not in text]
                failed = output.with_name(f"{output.stem}-failed.png")
                driver.save_screenshot(str(failed))
                logger.error("the page did not show %s within %.0f s; its screenshot is %s", missing, timeout, failed)
                return False
            _close_side_panels(driver)
            _show_parameter_differences(driver)
            time.sleep(1)
            driver.save_screenshot(str(output))
            return True
        finally:
            driver.quit()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    tracking_uri = args.tracking_uri or default_tracking_uri()
    if args.url and not args.url.startswith(("http://127.0.0.1", "http://localhost")):
        print(f"screenshot_ui: --url {args.url} is not on the loopback; use http://127.0.0.1:PORT", file=sys.stderr)
        return 2

    server: UiServer | None = None
    try:
        runs = load_study_runs(args.study, tracking_uri)
        if runs.empty:
            raise HcaeError(f"no MLflow runs of study {args.study!r} in {tracking_uri}")
        if args.url is None:
            server = start_ui_server(tracking_uri, free_port())
        base_url = args.url or server.url
        url, compared = study_compare_url(args.study, tracking_uri, base_url=base_url)
        expected = [*compared["run_name"], args.metric]
        logger.info("opening %s", url)
        ok = capture(url, expected, args.output, args.timeout, args.window_size)
    except HcaeError as error:
        print(f"screenshot_ui: error: {error}", file=sys.stderr)
        return 2
    finally:
        if server is not None:
            server.stop()

    if ok:
        print(f"saved {args.output}: the compare view of {len(compared)} runs of study {args.study}")
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
