"""Driving the console as a person does: the console process (``jobnet console``) and headless
Chromium through Selenium.

Chromium and its driver are Debian's (``chromium``, ``chromium-driver``, installed by
scripts/setup): the driver's path is given explicitly, so Selenium Manager never looks for, let
alone downloads, a browser or a driver. Used by the K tests and by scripts/console-screenshots.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from jobnet.devenv.emulator import free_port
from tests.support.netutil import wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
REPO_ROOT = Path(__file__).resolve().parents[2]
#: Chromium with nothing that talks to the internet: no updates, sync, QUIC or first-run pages.
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def missing_browser() -> str | None:
    """Why the browser tests cannot run here (None when they can)."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return f"{path} is missing (Debian packages chromium and chromium-driver; scripts/setup installs them)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the Python package selenium is missing (pip install -e '.[test]')"
    return None


class ConsoleProcess:
    """``jobnet console`` as a subprocess on a free port of 127.0.0.1; ``url`` once it listens."""

    def __init__(self, kubeconfig: Path, workdir: Path, *extra_args: str) -> None:
        self.port = free_port()
        self.log_path = workdir / f"console-{self.port}.log"
        self.args = [
            sys.executable,
            "-m",
            "jobnet.cli",
            "console",
            f"--kubeconfig={kubeconfig}",
            f"--port={self.port}",
            *extra_args,
        ]
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> ConsoleProcess:
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
        wait_until(
            lambda: "jobnet console: http://" in self.log_text() or self.process.poll() is not None,  # type: ignore[union-attr]
            timeout=timeout,
            what="the console to listen",
        )
        if self.process.poll() is not None:
            raise AssertionError(f"the console exited ({self.process.returncode}):\n{self.log_text()}")
        return self

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@contextmanager
def chromium(language: str = "en-US", width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """A headless Chromium WebDriver with its own fresh profile, closed afterwards."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="jobnet-console-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in CHROMIUM_ARGS:
        options.add_argument(argument)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={width},{height}")
    options.add_argument(f"--lang={language}")
    options.add_experimental_option("prefs", {"intl.accept_languages": language})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


class Page:
    """The browser as a person uses it: open, click, type, read, and wait for what the page shows
    (bounded; never a bare sleep)."""

    def __init__(self, driver: Any, base_url: str, timeout: float = 30.0) -> None:
        self.driver = driver
        self.base_url = base_url
        self.timeout = timeout

    def open(self, path: str) -> None:
        self.driver.get(self.base_url + path)

    def find(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.wait(lambda: self.driver.find_element(By.CSS_SELECTOR, css), f"an element {css!r}")

    # Live updates replace parts of the page at any time: every read and click below finds its
    # element afresh and is retried when the element was replaced under it.

    def click(self, css: str) -> None:
        self.wait(lambda: self.find_now(css).click() or True, f"a clickable {css!r}")

    def text(self, css: str) -> str:
        return str(self.wait(lambda: [self.find_now(css).text], f"an element {css!r}")[0])

    def attribute(self, css: str, name: str) -> str | None:
        return self.wait(lambda: [self.find_now(css).get_attribute(name)], f"an element {css!r}")[0]  # type: ignore[no-any-return]

    def texts(self, css: str) -> list[str]:
        """The texts of every element ``css`` matches (none: an empty list)."""
        return self.wait(lambda: [[e.text for e in self.find_all_now(css)]], f"elements {css!r}")[0]  # type: ignore[no-any-return]

    def attributes(self, css: str, name: str) -> list[str | None]:
        return self.wait(  # type: ignore[no-any-return]
            lambda: [[e.get_attribute(name) for e in self.find_all_now(css)]], f"elements {css!r}"
        )[0]

    def find_now(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all_now(self, css: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return list(self.driver.find_elements(By.CSS_SELECTOR, css))

    def wait(self, condition: Callable[[], Any], what: str, timeout: float | None = None) -> Any:
        """``condition()`` once it is truthy (exceptions count as not yet), failing after the
        timeout with ``what`` and the page's text."""
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.support.ui import WebDriverWait

        def check(_driver: Any) -> Any:
            try:
                return condition()
            except (WebDriverException, LookupError):
                return False

        from selenium.common.exceptions import TimeoutException

        try:
            return WebDriverWait(self.driver, timeout or self.timeout, poll_frequency=0.2).until(check)
        except TimeoutException:
            body = self.driver.find_element("tag name", "body").text
            raise AssertionError(
                f"{what} did not appear within {timeout or self.timeout}s; the page shows:\n{body[-3000:]}"
            ) from None

    def wait_text(self, css: str, pattern: str, timeout: float | None = None) -> str:
        """The text of ``css`` once it matches ``pattern`` (a regular expression)."""
        regex = re.compile(pattern)
        return str(
            self.wait(
                lambda: regex.search(self.text_now(css)) and self.text_now(css),
                f"{pattern!r} in {css!r}",
                timeout,
            )
        )

    def text_now(self, css: str) -> str:
        found = self.find_all_now(css)
        return str(found[0].text) if found else ""

    def confirm(self, message: str = "") -> None:
        """Fill in the confirmation dialog's message and confirm."""
        self.find("#confirm-dialog[open]")
        if message:
            self.find("#confirm-message").send_keys(message)
        self.click("#confirm-ok")

    def refreshes(self) -> int:
        """How many live updates the page applied (the page never reloads for them)."""
        return int(self.driver.find_element("tag name", "body").get_attribute("data-refreshed") or 0)
