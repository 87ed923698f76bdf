"""The console server against the API emulator over HTTP (no browser): cross-site request
protection, acting as the kubeconfig's (impersonated) user, refusals carrying the server's
message, the forwarded-token mode, and nothing secret in its log."""

from __future__ import annotations

import http.cookiejar
import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.console.browser import ConsoleProcess
from tests.console.conftest import CONSOLE_USER_RULES, impersonating_kubeconfig
from tests.support.emulator import EmulatorServer, free_port, grant
from tests.support.kube import jobnet, jobrun, kubectl_apply, script_job
from tests.support.netutil import wait_until
from tests.support.operator_proc import OperatorProcess

pytestmark = [pytest.mark.emulator]


class Client:
    """A browser-like HTTP client: keeps cookies, reads the CSRF token from the pages."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
        request = urllib.request.Request(self.base + path, headers=headers or {})
        try:
            with self.opener.open(request, timeout=20) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def csrf(self) -> str:
        status, page = self.get("/runs")
        assert status == 200, page
        found = re.search(r'<meta name="csrf-token" content="([0-9a-f]+)">', page)
        assert found, page
        return found.group(1)

    def post(self, path: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(
            self.base + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", **headers},
            method="POST",
        )
        try:
            with self.opener.open(request, timeout=20) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())


@pytest.fixture
def world(emulator: EmulatorServer, tmp_path: Path) -> Any:
    # The job's host is a closed port on loopback: its launch fails at once (HostUnreachable).
    closed = {"address": "127.0.0.1", "port": free_port(), "user": "batch", "credentialsSecret": "vm1-ssh"}
    result = kubectl_apply(emulator, jobnet("nightly", script_job("extract"), host=closed))
    assert result.rc == 0, result.stderr
    return emulator


def _console(emulator: EmulatorServer, tmp_path: Path, *args: str, user: str = "alice") -> ConsoleProcess:
    grant(emulator, f"console-{user.split('@')[0]}", CONSOLE_USER_RULES, users=[user])
    kubeconfig = impersonating_kubeconfig(emulator.kubeconfig, tmp_path, user, ("night-shift",))
    return ConsoleProcess(kubeconfig, tmp_path, *args).start()


def test_state_changes_need_the_session_csrf_token_and_the_same_origin(world: EmulatorServer, tmp_path: Path) -> None:
    console = _console(world, tmp_path)
    try:
        client = Client(console.url)
        token = client.csrf()
        start = {"jobnet": "nightly", "env": ""}
        assert client.post("/api/runs/default", start, {})[0] == 403
        assert client.post("/api/runs/default", start, {"X-CSRF-Token": "0" * 64})[0] == 403
        status, answer = client.post(
            "/api/runs/default", start, {"X-CSRF-Token": token, "Origin": "http://evil.example"}
        )
        assert (status, answer) == (403, {"error": "cross-site request refused"})
        other = Client(console.url)  # another browser: its own session, so the token is not valid for it
        other.csrf()
        assert other.post("/api/runs/default", start, {"X-CSRF-Token": token})[0] == 403
        assert world.list_objects("jobnet.dev/v1alpha1", "jobruns", "default") == []

        status, answer = client.post("/api/runs/default", {**start, "env": "DAY=monday"}, {"X-CSRF-Token": token})
        assert status == 200, answer
        created = world.get("jobnet.dev/v1alpha1", "jobruns", "default", answer["name"])
        assert created is not None and created["spec"] == {"jobNetRef": "nightly", "env": {"DAY": "monday"}}
        # aiohttp writes the access line after the answer has left
        wait_until(lambda: "POST /api/runs/default 200" in console.log_text(), timeout=10, what="the access line")
        assert token not in console.log_text()
    finally:
        console.stop()
    log = console.log_text()
    assert "emulator-test-token" not in log, log


def test_a_refused_change_carries_the_reason_and_changes_nothing(world: EmulatorServer, tmp_path: Path) -> None:
    result = kubectl_apply(world, jobrun("nightly", name="nightly-1"))
    assert result.rc == 0, result.stderr
    console = _console(world, tmp_path)
    try:
        client = Client(console.url)
        token = {"X-CSRF-Token": client.csrf()}
        # Checked like `kubectl jobnet override` before anything is sent: a Pending job cannot be settled.
        status, answer = client.post(
            "/api/runs/default/nightly-1/override", {"path": "/nightly/extract", "state": "Succeeded"}, token
        )
        assert status == 422 and "Pending; cannot override it to Succeeded" in answer["error"], answer
        status, answer = client.post("/api/runs/default/nightly-1/stop", {"path": "/nightly/nope"}, token)
        assert status == 422 and "unknown path '/nightly/nope'" in answer["error"], answer
        status, page = client.get("/runs/default/missing-run")
        assert status == 404 and "not found" in page, page
        run = world.get("jobnet.dev/v1alpha1", "jobruns", "default", "nightly-1")
        assert run is not None
        assert not [key for key in run["metadata"].get("annotations") or {} if key.startswith("jobnet.dev/")], run
    finally:
        console.stop()


def test_the_output_of_a_job_never_launched_is_refused_with_the_reason(world: EmulatorServer, tmp_path: Path) -> None:
    result = kubectl_apply(world, jobrun("nightly", name="nightly-1"))  # no operator: it stays Pending
    assert result.rc == 0, result.stderr
    console = _console(world, tmp_path)
    try:
        client = Client(console.url)
        base = "/runs/default/nightly-1/output"
        status, body = client.get(f"{base}?path=/nightly/extract&offset=0")
        assert status == 422 and "never launched" in json.loads(body)["error"], body
        status, body = client.get(f"{base}?path=/nightly/extract&stream=stdin")
        assert status == 400 and "stdout or stderr" in json.loads(body)["error"], body
        # The stream says why in its one event, then ends (the page stops listening).
        status, body = client.get(f"{base}/stream?path=/nightly/extract&stream=stdout")
        assert status == 200 and body.startswith("event: problem\ndata: "), body
        assert "never launched" in json.loads(body.split("data: ", 1)[1])["message"], body
        # The access line says 200; the console's log says what went wrong.
        wait_until(
            lambda: re.search(
                r"output stream /runs/default/nightly-1/output/stream\?\S+: .*never launched", console.log_text()
            ),
            timeout=10,
            what="the console's log line of the stream's problem",
        )
    finally:
        console.stop()


def test_acts_as_the_impersonated_user(world: EmulatorServer, operator: OperatorProcess, tmp_path: Path) -> None:
    # The job fails at once (its host refuses connections), and a person may bypass it.
    result = kubectl_apply(world, jobrun("nightly", name="nightly-1"))
    assert result.rc == 0, result.stderr

    def phase() -> str:
        return str(
            ((world.get("jobnet.dev/v1alpha1", "jobruns", "default", "nightly-1") or {}).get("status") or {}).get(
                "phase"
            )
        )

    wait_until(lambda: phase() == "Failed", timeout=60, what="the run Failed", describe=phase)
    console = _console(world, tmp_path, user="bob@example.com")
    try:
        client = Client(console.url)
        status, answer = client.post(
            "/api/runs/default/nightly-1/override",
            {"path": "/nightly/extract", "state": "Succeeded", "message": "done by hand"},
            {"X-CSRF-Token": client.csrf()},
        )
        assert status == 200, answer
        wait_until(lambda: phase() == "Succeeded", timeout=30, what="the run Succeeded", describe=phase)
    finally:
        console.stop()
    overrides = world.get("jobnet.dev/v1alpha1", "jobruns", "default", "nightly-1")["status"]["overrides"]
    # The operator's mutating webhook stamped the person the console acted as.
    assert overrides[-1]["by"] == "bob@example.com" and overrides[-1]["message"].endswith(": done by hand"), overrides


def test_forward_token_mode_acts_with_the_viewers_own_token(world: EmulatorServer, tmp_path: Path) -> None:
    # The kubeconfig only says where the API server is (HTTPS, its CA); its token is never used.
    kubeconfig = world.write_kubeconfig(tmp_path / "server-only.yaml", world.issue_token("nobody"))
    grant(world, "console-dave", CONSOLE_USER_RULES, users=["dave"])
    viewer = world.issue_token("dave")
    console = ConsoleProcess(kubeconfig, tmp_path, "--forward-token").start()
    try:
        client = Client(console.url)
        status, page = client.get("/runs")
        assert status == 401 and "your own token" in page
        status, page = client.get("/runs", {"Authorization": "Bearer not-a-token"})
        assert status == 401 and "HTTP 401: Unauthorized" in page, page
        status, page = client.get("/runs", {"Authorization": f"Bearer {viewer}"})
        assert status == 200 and "nightly" in page, page
    finally:
        console.stop()
    assert any(user == "dave" for user, _ in world.access_log()), world.access_log()
    assert viewer not in console.log_text()


def test_only_loopback_without_forward_token(world: EmulatorServer, tmp_path: Path) -> None:
    console = ConsoleProcess(world.kubeconfig, tmp_path, "--address=0.0.0.0")
    with pytest.raises(AssertionError, match="needs --forward-token"):
        console.start()
