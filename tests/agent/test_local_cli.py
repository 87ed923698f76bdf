"""The human commands (status, jobs, show, logs, version), config errors, and the zipapp."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobnet_agent import __version__, cli
from jobnet_agent.bundle import build_zipapp, cached_zipapp, sources_digest
from jobnet_agent.config import AgentConfig, from_options, plain_options
from tests.agent.conftest import (
    AGENT_PYTHON,
    Agent,
    AgentDirs,
    agent_env,
    key_text,
    new_key,
    wait_until,
)


def _find_python38() -> str | None:
    """A working Python 3.8 (the agent's oldest supported version), if this machine has one."""
    candidates = [shutil.which("python3.8")] + sorted(
        str(p) for p in Path.home().glob(".pyenv/versions/3.8*/bin/python3.8")
    )
    for candidate in filter(None, candidates):
        probe = subprocess.run(
            [candidate, "-c", "import sys; assert sys.version_info[:2] == (3, 8)"], capture_output=True, timeout=30
        )
        if probe.returncode == 0:
            return candidate
    return None


PYTHON38 = _find_python38()


def _finished_job(dirs: AgentDirs, body: str = 'echo "line $1"; echo oops >&2; exit 2\n') -> dict:
    agent = Agent(dirs)
    try:
        key = new_key("/nightly/load")
        agent.launch(key, dirs.script("job.sh", body), ["one"])
        agent.wait_state(key, "exited")
    finally:
        agent.close()
    return key


def test_version_names_agent_and_protocol(dirs: AgentDirs) -> None:
    result = dirs.cli("version")

    assert result.returncode == 0 and result.stdout.startswith(f"jobnet-agent {__version__} (protocol 1")


def test_jobs_and_status_show_what_the_journal_knows(dirs: AgentDirs) -> None:
    key = _finished_job(dirs)

    jobs = dirs.cli("jobs", *dirs.options())
    only_other_run = dirs.cli("jobs", "--run", "other", *dirs.options())
    status = dirs.cli("status", *dirs.options())

    header, line = jobs.stdout.splitlines()
    assert jobs.returncode == 0 and header.split() == ["STATE", "RC", "PID", "STARTED", "ENDED", "REASON", "KEY"]
    assert line.split()[:2] == ["exited", "2"] and line.endswith(key_text(key))
    assert key_text(key) not in only_other_run.stdout
    assert status.returncode == 0 and "exited 1" in status.stdout and "last journal seq 3" in status.stdout


def test_status_shows_active_jobs_and_whether_they_are_supervised(dirs: AgentDirs) -> None:
    agent = Agent(dirs)
    try:
        key = new_key()
        agent.launch(key, dirs.script("sleep.sh", "exec sleep 1000\n"))
        status = dirs.cli("status", *dirs.options())
        agent.call("kill", key=key, graceSeconds=0)
        agent.wait_state(key, "killed")
    finally:
        agent.close()

    [line] = [line for line in status.stdout.splitlines() if key_text(key) in line]
    assert "running" in line and line.endswith("supervised")


def test_show_tells_a_person_how_a_job_ended_and_where_its_output_is(dirs: AgentDirs) -> None:
    key = _finished_job(dirs, 'for i in 1 2 3 4 5; do echo "line $i"; done; echo oops >&2; exit 2\n')
    job_dir = next((dirs.state / "jobs").glob("*/*"))
    before = {p.name: p.stat().st_mtime_ns for p in job_dir.iterdir()}

    shown = dirs.cli("show", key_text(key), "--lines", "2", *dirs.options())

    assert shown.returncode == 0, shown.stderr
    fields = dict(
        line.split(":", 1) for line in shown.stdout.splitlines() if not line.startswith(("---", "line", "oops"))
    )
    assert fields["state"].strip() == "exited" and fields["rc"].strip() == "2"
    assert fields["directory"].strip() == str(job_dir)
    assert fields["stdout"].strip() == f"35 bytes, 0 dropped from the middle: {job_dir / 'stdout'}"
    assert shown.stdout.endswith(
        f"--- last 2 line(s) of stdout (all of it: jobnet-agent logs {key_text(key)}) ---\nline 4\nline 5\n"
        f"--- last 1 line(s) of stderr (all of it: jobnet-agent logs {key_text(key)}) ---\noops\n"
    )
    # Read only: the job's files are as the supervisor left them.
    assert {p.name: p.stat().st_mtime_ns for p in job_dir.iterdir()} == before


def test_show_of_a_running_job_says_it_is_supervised(dirs: AgentDirs) -> None:
    agent = Agent(dirs)
    try:
        key = new_key()
        agent.launch(key, dirs.script("sleep.sh", "exec sleep 1000\n"))
        shown = dirs.cli("show", key_text(key), *dirs.options())
        agent.call("kill", key=key, graceSeconds=0)
        agent.wait_state(key, "killed")
    finally:
        agent.close()

    assert shown.returncode == 0, shown.stderr
    assert "state:          running" in shown.stdout and "rc:             -" in shown.stdout
    assert "supervised:     yes" in shown.stdout and "stdout:         0 bytes" in shown.stdout


def test_show_of_an_unknown_key_says_so(dirs: AgentDirs) -> None:
    _finished_job(dirs)

    unknown = dirs.cli("show", "nope:/x#1", *dirs.options())

    assert unknown.returncode == 2 and "has no job nope:/x#1" in unknown.stderr


def test_logs_prints_stdout_or_stderr(dirs: AgentDirs) -> None:
    key = _finished_job(dirs)

    out = dirs.cli("logs", key_text(key), *dirs.options())
    err = dirs.cli("logs", key_text(key), "--stderr", *dirs.options())
    unknown = dirs.cli("logs", "nope:/x#1", *dirs.options())
    malformed = dirs.cli("logs", "nope", *dirs.options())

    assert (out.returncode, out.stdout) == (0, "line one\n")
    assert err.stdout == "oops\n"
    assert unknown.returncode == 2 and "no job nope:/x#1" in unknown.stderr
    assert malformed.returncode == 2 and "run:path#attempt" in malformed.stderr


def test_logs_says_when_output_was_dropped(dirs: AgentDirs) -> None:
    agent = Agent(dirs, max_output_bytes=1000, tail_bytes=100)
    try:
        key = new_key()
        agent.launch(key, dirs.script("big.sh", "head -c 5000 /dev/zero\n"))
        agent.wait_state(key, "exited")
    finally:
        agent.close()

    result = dirs.cli("logs", key_text(key), *dirs.options())

    assert len(result.stdout) == 1000 and "4000 bytes were dropped" in result.stderr


def test_status_of_a_state_dir_that_does_not_exist_says_so(dirs: AgentDirs) -> None:
    result = dirs.cli("status", "--state-dir", str(dirs.root / "nowhere"), "--boot-id-file", str(dirs.boot_id_file))

    assert result.returncode == 2 and "does not exist" in result.stderr


@pytest.mark.parametrize(
    "options, needle",
    [
        (["--grace-seconds", "-1"], "--grace-seconds must be >= 0"),
        (["--tail-bytes", "100", "--max-output-bytes", "100"], "--tail-bytes must be between"),
        (["--heartbeat-seconds", "0"], "--heartbeat-seconds must be > 0"),
        (["--max-output-bytes", "lots"], "argument --max-output-bytes: invalid int value: 'lots'"),
    ],
)
def test_bad_options_are_refused_with_a_clear_message(dirs: AgentDirs, options: list[str], needle: str) -> None:
    result = dirs.cli("serve", "--state-dir", str(dirs.state), *options)

    assert result.returncode == 2 and needle in result.stderr


def _argparse_options(argv: list[str]) -> dict[str, object] | None:
    """What the command line parser reads from ``serve``'s ``argv``; None where it refuses it."""
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            options = vars(cli._parser(["serve", *argv]).parse_args(["serve", *argv]))
        except SystemExit:
            return None
    del options["command"]
    return options


_FLAGS = ["--" + name.replace("_", "-") for name in AgentConfig._fields]


_ODD_FLAGS = ["--state", "--grace", "--state-dir=/s", "--grace_seconds", "-h", "--", "x"]
#: Mostly values every option takes (a number that is no negative one), some that only a few do.
_VALUES = st.one_of(
    st.integers(min_value=0).map(str),
    st.integers(min_value=0).map(str),
    st.integers().map(str),
    st.floats().map(str),
    st.text(),
    st.sampled_from(["-1", "--x", "-", ""]),
)


@given(
    st.lists(
        st.tuples(st.sampled_from(_FLAGS) | st.sampled_from(_FLAGS) | st.sampled_from(_ODD_FLAGS), _VALUES),
        max_size=5,
    ).map(lambda pairs: [part for pair in pairs for part in pair])
)
def test_serve_options_are_read_without_argparse_exactly_as_argparse_reads_them(argv: list[str]) -> None:
    plain = plain_options(argv)

    # Where plain_options reads an argv, argparse reads it the same; where it does not, argparse
    # reads it (or refuses it) as it always did.
    assert plain is None or plain == _argparse_options(argv)


def test_the_options_serve_is_started_with_are_read_without_argparse() -> None:
    config = AgentConfig(state_dir="/s", boot_id_file="/b", log_file="/l", grace_seconds=0.5, tail_bytes=3)
    options = plain_options(config.to_args())

    assert options is not None and from_options(options) == config
    assert plain_options(["--heartbeat-seconds", "0.2", "--state-dir", "/s"]) == _argparse_options(
        ["--heartbeat-seconds", "0.2", "--state-dir", "/s"]
    )
    assert plain_options(["--heartbeat-seconds"]) is None  # argparse's to refuse


def test_zipapp_is_deterministic_and_self_contained(tmp_path: Path, dirs: AgentDirs) -> None:
    (tmp_path / "a").mkdir()
    first = build_zipapp(tmp_path / "a" / "jobnet-agent.pyz")
    second = build_zipapp(tmp_path / "jobnet-agent.pyz")
    isolated = tmp_path / "isolated"
    isolated.mkdir()
    copy = isolated / "jobnet-agent.pyz"
    shutil.copy(first, copy)

    env = {k: v for k, v in agent_env().items() if k != "PYTHONPATH"}
    version = subprocess.run(
        [AGENT_PYTHON, str(copy), "version"], env=env, capture_output=True, text=True, cwd=isolated
    )

    assert hashlib.sha256(first.read_bytes()).digest() == hashlib.sha256(second.read_bytes()).digest()
    assert first.read_bytes().startswith(b"#!/usr/bin/env python3\n") and first.stat().st_mode & 0o111
    assert version.returncode == 0 and __version__ in version.stdout


def test_a_cached_zipapp_is_built_once_per_version_of_the_sources(tmp_path: Path) -> None:
    first = cached_zipapp(tmp_path)
    built = first.stat()
    again = cached_zipapp(tmp_path)  # a restarted operator: read, not compiled again

    assert again == first and again.stat().st_ino == built.st_ino and again.stat().st_mtime_ns == built.st_mtime_ns
    assert sources_digest()[:16] in first.name and __version__ in first.name
    assert first.read_bytes() == build_zipapp(tmp_path / "fresh.pyz").read_bytes()


def test_zipapp_modules_load_from_its_bytecode_on_the_building_python(tmp_path: Path) -> None:
    """Python writes no bytecode into a zip: without the bundled .pyc every start compiled the agent."""
    pyz = build_zipapp(tmp_path / "jobnet-agent.pyz")
    load = f"import sys; sys.path.insert(0, {str(pyz)!r}); import jobnet_agent.server as s; print(s.__file__)"

    loaded = subprocess.run([sys.executable, "-I", "-S", "-c", load], capture_output=True, text=True, timeout=30)

    assert loaded.returncode == 0 and loaded.stdout.strip() == f"{pyz}/jobnet_agent/server.pyc", loaded.stderr


PYTHONS = [
    pytest.param(AGENT_PYTHON, id="current"),
    pytest.param(
        PYTHON38,
        id="python3.8",
        marks=pytest.mark.skipif(
            PYTHON38 is None, reason="no working python3.8 here (the agent's oldest supported Python)"
        ),
    ),
]


@pytest.mark.parametrize("python", PYTHONS)
def test_zipapp_serves_and_supervises_jobs(tmp_path: Path, dirs: AgentDirs, python: str) -> None:
    """From the zipapp alone (no PYTHONPATH): supervisors re-enter the same archive."""
    pyz = build_zipapp(tmp_path / "jobnet-agent.pyz")
    env = {k: v for k, v in agent_env().items() if k != "PYTHONPATH"}
    script = dirs.script("ok.sh", "echo from-zipapp\n")
    key = new_key()
    requests = [
        {"id": 1, "op": "hello", "protocol": 1, "client": "t"},
        {"id": 2, "op": "launch", "key": key, "script": script, "args": [], "env": {}},
    ]
    serve = subprocess.run(
        [python, str(pyz), "serve", *dirs.options()],
        input="".join(json.dumps(r) + "\n" for r in requests),
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    responses = [json.loads(line) for line in serve.stdout.splitlines() if '"id"' in line]

    assert [r["ok"] for r in responses] == [True, True], serve.stderr
    assert responses[1]["result"]["record"]["state"] in ("running", "exited")
    assert responses[1]["result"]["record"]["pid"] > 0

    def run(*args: str) -> str:
        return subprocess.run(
            [python, str(pyz), *args, *dirs.options()], env=env, capture_output=True, text=True, timeout=30
        ).stdout

    wait_until(lambda: "\nexited " in run("jobs"), what="the job to end")
    assert run("logs", key_text(key)) == "from-zipapp\n"
