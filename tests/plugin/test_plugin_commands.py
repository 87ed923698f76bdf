"""kubectl jobnet tree/override/stop/events against the Kubernetes API emulator (real HTTP, real
kubectl where kubectl is the way in). The JobRun's status is written through the API directly:
these commands only read it, the operator runtime is not needed."""

from __future__ import annotations

import re
import subprocess
import threading
from pathlib import Path

import pytest

from jobnet.cli import kubectl_plugin_main
from jobnet.core.models import JobNetSpec
from jobnet.core.snapshot import encode_snapshot, snapshot_configmap, snapshot_status, used_jobnets
from jobnet.plugin.tree import format_duration
from tests.plugin.conftest import (
    PLUGIN,
    RUN,
    T0,
    Cli,
    nightly_objects,
    stuck_status,
    write_kubeconfig,
)
from tests.support.kube import GROUP_VERSION, kubectl_apply

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def columns(line: str) -> list[str]:
    return line.split()


def test_tree_shows_every_jobnet_and_job_in_execution_order(cli: Cli) -> None:
    code, out, err = cli.run("tree", RUN)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"JobRun {RUN} (namespace default, JobNet nightly)"
    assert "Phase: Stuck" in lines[1] and "Progress: 2/6" in lines[1] and f"Started: {T0}" in lines[1]
    assert "Finished: -" in lines[1]
    table = lines[lines.index("") + 1 :]
    assert columns(table[0]) == ["NAME", "STATE", "HOST", "ATTEMPT", "DURATION", "EXIT", "REASON", "MESSAGE"]
    names = [row[: row.index(" ", len(row) - len(row.lstrip()))] for row in table[1:]]
    assert names == ["/nightly", "  extract", "  transform", "  load", "    step1", "    step2", "  report"]
    rows = {name.strip(): row for name, row in zip(names, table[1:], strict=True)}
    assert rows["load"].startswith("  load [load-net]")
    assert rows["report"].startswith("  report (finally)")
    assert columns(rows["extract"])[1:] == ["Succeeded", "vm1.internal", "1", "2.5s", "0"]
    assert columns(rows["transform"])[1:6] == ["Succeeded", "vm1.internal", "1", "1m05s", "0"]
    step1 = columns(rows["step1"])
    assert step1[:4] == ["step1", "Stuck", "vm1.internal", "1"] and "HeartbeatLost" in step1
    assert "no heartbeat from the agent on vm1.internal" in rows["step1"]
    assert rows["step1"].rstrip().endswith("...")  # long messages are shortened without --wide
    assert columns(rows["step2"]) == ["step2", "Pending"]
    assert not ANSI.search(out), "no colours when stdout is not a terminal"


@pytest.mark.parametrize(
    "seconds, text",
    [(None, "-"), (0.25, "250ms"), (2.5, "2.5s"), (59.94, "59.9s"), (65, "1m05s"), (3599, "59m59s"), (7380, "2h03m")],
)
def test_durations_read_like_kubectl_ages(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


def test_tree_colours_and_wide_messages(cli: Cli) -> None:
    code, out, _ = cli.run("tree", RUN, "--color=always", "--wide")
    assert code == 0
    assert "\x1b[1;35mStuck" in out and "\x1b[32mSucceeded" in out
    assert "may still be running or may have ended" in ANSI.sub("", out)


def test_tree_falls_back_to_status_paths_when_the_jobnet_is_gone(cli: Cli) -> None:
    cli.emulator.remove(GROUP_VERSION, "jobnets", "default", "load-net")
    code, out, err = cli.run("tree", RUN)
    assert code == 0, err
    assert "Note: the run's graph cannot be rebuilt from JobNet 'nightly' now" in out and "load-net" in out
    assert "    step1" in out and "HeartbeatLost" in out


def test_tree_shows_the_graph_the_run_started_with_when_the_jobnet_was_edited_since(cli: Cli) -> None:
    """The run executes its JobNet snapshot: the tree is built from it, not from the edited JobNet."""
    body = cli.emulator.get(GROUP_VERSION, "jobruns", "default", RUN)
    assert body is not None
    catalog = {
        item["metadata"]["name"]: JobNetSpec.model_validate(item["spec"])
        for item in cli.emulator.list_objects(GROUP_VERSION, "jobnets", "default")
    }
    started = used_jobnets("nightly", catalog)
    data = encode_snapshot(started)
    configmap = snapshot_configmap(body, data)
    cli.emulator.put(configmap)
    versions = {name: cli.emulator.get(GROUP_VERSION, "jobnets", "default", name)["metadata"] for name in started}
    snapshot = snapshot_status(configmap["metadata"]["name"], data, versions, started)
    cli.set_status({**stuck_status(), "jobNetSnapshot": snapshot.model_dump(by_alias=True, mode="json")})
    edited = cli.emulator.get(GROUP_VERSION, "jobnets", "default", "load-net")
    assert edited is not None
    edited["spec"]["jobs"] = [{"name": "renamed", "script": "/opt/batch/renamed.sh"}]
    cli.emulator.put(edited)

    code, out, err = cli.run("tree", RUN)

    assert code == 0, err
    assert "    step1" in out and "    step2" in out and "renamed" not in out
    assert "Note:" not in out


def test_tree_watch_ends_when_the_run_finishes(cli: Cli) -> None:
    argv = [
        str(PLUGIN),
        "tree",
        RUN,
        "--watch",
        "--interval",
        "0.2",
        "--timeout",
        "30",
        "--kubeconfig",
        str(cli.emulator.kubeconfig),
    ]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli.environment())
    first_frame = process.stdout.readline()  # type: ignore[union-attr]
    assert first_frame.startswith(f"JobRun {RUN}")
    finished = stuck_status()
    finished.update(phase="Succeeded", progress="6/6", finishedAt="2026-11-22T03:05:00.000Z")
    for entry in finished["jobs"].values():
        entry.update(state="Succeeded", reason=None, message=None)
    cli.set_status(finished)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "Phase: Succeeded" in out and "Progress: 6/6" in out and "Elapsed: 5m00s" in out


def test_tree_watch_gives_up_at_its_timeout(cli: Cli) -> None:
    code, out, err = cli.run("tree", RUN, "--watch", "--interval", "0.1", "--timeout", "0.5")
    assert code == 1
    assert f"{RUN} is still Stuck after --timeout 0.5s" in err
    assert out.count(f"JobRun {RUN}") == 1, "an unchanged run is drawn once when stdout is not a terminal"


def test_override_is_checked_then_annotated(cli: Cli) -> None:
    code, out, err = cli.run("override", RUN, "/nightly/load/step1", "ready", "-m", "checked on the VM: not running")
    assert code == 0, err
    # A job's override carries the state and attempt the plugin read: it applies only while they hold.
    assert "override /nightly/load/step1=Ready@Stuck#1 requested" in out
    assert cli.annotations() == {
        "jobnet.dev/override": "/nightly/load/step1=Ready@Stuck#1",
        "jobnet.dev/override-message": "checked on the VM: not running",
    }
    # Not consumed yet: a second override is added to the pending one (a jobnet takes no precondition).
    code, _, err = cli.run("override", RUN, "/nightly/load", "Failed")
    assert code == 0, err
    assert cli.annotations()["jobnet.dev/override"] == "/nightly/load/step1=Ready@Stuck#1,/nightly/load=Failed"


def test_override_precondition_options(cli: Cli) -> None:
    # --seen: the state the person looked at; one the run already left is refused before writing.
    code, _, err = cli.run("override", RUN, "/nightly/load/step1", "Ready", "--seen", "Stuck#2")
    assert code == 1
    assert "/nightly/load/step1 is Stuck (attempt 1) now, not Stuck in attempt 2 as the override expects" in err
    code, _, err = cli.run("override", RUN, "/nightly/load/step1", "Ready", "--seen", "Stuk")
    assert code == 1 and "unknown state 'Stuk' after '@'" in err
    assert cli.annotations() == {}
    code, _, err = cli.run("override", RUN, "/nightly/load/step1", "Ready", "--seen", "stuck")
    assert code == 0, err
    assert cli.annotations() == {"jobnet.dev/override": "/nightly/load/step1=Ready@Stuck"}


def test_override_without_precondition(cli: Cli) -> None:
    # --any-state: no precondition, as a plain annotation: it applies to whatever the state is.
    code, out, err = cli.run("override", RUN, "/nightly/load/step1", "Stopped", "--any-state")
    assert code == 0, err
    assert "override /nightly/load/step1=Stopped requested" in out
    assert cli.annotations() == {"jobnet.dev/override": "/nightly/load/step1=Stopped"}


def test_illegal_override_is_refused_before_anything_is_written(cli: Cli) -> None:
    code, _, err = cli.run("override", RUN, "/nightly/extract", "Ready")
    assert code == 1
    assert "kubectl jobnet override: override refused:" in err
    assert "/nightly/extract is Succeeded; cannot override it to Ready" in err
    code, _, err = cli.run("override", RUN, "/nightly/load/stepp1", "Sucessful")
    assert code == 1
    assert "unknown override state 'Sucessful'" in err and "did you mean '/nightly/load/step1'?" in err
    assert cli.annotations() == {}


def test_stop_defaults_to_the_whole_run_and_validates_paths(cli: Cli) -> None:
    code, _, err = cli.run("stop", RUN, "/nightly/lod")
    assert code == 1 and "unknown path '/nightly/lod'" in err and "did you mean '/nightly/load'?" in err
    assert cli.annotations() == {}
    code, out, err = cli.run("stop", RUN, "/nightly/load/")
    assert code == 0, err
    assert cli.annotations() == {"jobnet.dev/stop": "/nightly/load"}
    code, out, err = cli.run("stop", RUN)
    assert code == 0, err
    assert "stop of /nightly requested" in out
    assert cli.annotations() == {"jobnet.dev/stop": "/nightly/load,/nightly"}


def test_a_finished_run_cannot_be_stopped(cli: Cli) -> None:
    finished = stuck_status()
    finished.update(phase="Failed", finishedAt="2026-11-22T03:05:00.000Z")
    cli.set_status(finished)
    code, _, err = cli.run("stop", RUN)
    assert code == 1 and f"JobRun {RUN} already ended (Failed): nothing to stop" in err
    assert cli.annotations() == {}


def _event(name: str, uid: str, reason: str, when: str, message: str, kind: str = "JobRun") -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{name}.{uid}.{reason.lower()}", "namespace": "default"},
        "involvedObject": {"apiVersion": GROUP_VERSION, "kind": kind, "name": name, "namespace": "default", "uid": uid},
        "type": "Warning" if reason == "Stuck" else "Normal",
        "reason": reason,
        "message": message,
        "firstTimestamp": when,
        "lastTimestamp": when,
        "count": 1,
    }


def test_events_of_this_run_only_oldest_first(cli: Cli) -> None:
    uid = cli.emulator.get(GROUP_VERSION, "jobruns", "default", RUN)["metadata"]["uid"]  # type: ignore[index]
    cli.emulator.put(_event(RUN, uid, "Stuck", "2026-11-22T03:02:00Z", "/nightly/load/step1: HeartbeatLost"))
    cli.emulator.put(_event(RUN, uid, "Started", "2026-11-22T03:00:00Z", "run started"))
    cli.emulator.put(
        _event(RUN, "uid-of-an-older-run", "Started", "2026-11-21T03:00:00Z", "an older run of the same name")
    )
    cli.emulator.put(_event("nightly-2", "other", "Started", "2026-11-22T03:01:00Z", "another run"))
    cli.emulator.put(
        _event(RUN, "jobnet-uid", "Valid", "2026-11-22T03:01:00Z", "a JobNet of the same name", kind="JobNet")
    )
    code, out, err = cli.run("events", RUN)
    assert code == 0, err
    lines = out.splitlines()
    assert columns(lines[0]) == ["LAST", "SEEN", "TYPE", "REASON", "COUNT", "MESSAGE"]
    assert [columns(line)[:3] for line in lines[1:]] == [
        ["2026-11-22T03:00:00Z", "Normal", "Started"],
        ["2026-11-22T03:02:00Z", "Warning", "Stuck"],
    ]
    assert lines[2].endswith("/nightly/load/step1: HeartbeatLost")


def test_no_events_is_said_plainly(cli: Cli) -> None:
    code, out, _ = cli.run("events", RUN)
    assert code == 0 and out.strip() == f"No events for JobRun {RUN} in namespace default."


def test_clear_errors_for_unknown_run_context_and_unreachable_api(cli: Cli, tmp_path: Path) -> None:
    code, _, err = cli.run("tree", "no-such-run")
    assert code == 1
    assert err.startswith("kubectl jobnet tree: getting JobRun 'no-such-run' in namespace 'default': HTTP 404")
    code, _, err = cli.run("events", RUN, "--context", "prod")
    assert code == 1 and "context 'prod' not found in the kubeconfig (contexts: emulator)" in err
    dead = write_kubeconfig(cli.emulator, tmp_path / "dead.yaml", "default")
    dead.write_text(dead.read_text().replace(cli.emulator.url, "http://127.0.0.1:9"))
    code = kubectl_plugin_main(["tree", RUN, "--kubeconfig", str(dead), "--request-timeout", "2"])
    err = cli.capsys.readouterr().err
    assert code == 1 and "the API server at http://127.0.0.1:9 is unreachable" in err
    assert "emulator-test-token" not in err
    broken = tmp_path / "broken.yaml"
    broken.write_text("clusters: [\n")
    code = kubectl_plugin_main(["stop", RUN, "--kubeconfig", str(broken)])
    err = cli.capsys.readouterr().err
    assert code == 1 and err.startswith(f"kubectl jobnet stop: cannot use the kubeconfig ({broken}):")


def test_through_real_kubectl_with_kubeconfig_env_and_context_namespace(cli: Cli, tmp_path: Path) -> None:
    """kubectl finds kubectl-jobnet on PATH; $KUBECONFIG and the context's namespace are honoured."""
    result = kubectl_apply(
        cli.emulator,
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "batch"}},
        *nightly_objects("batch"),
        verb="create",
    )
    assert result.rc == 0, result.stderr
    cli.set_status(stuck_status(), namespace="batch")
    kubeconfig = write_kubeconfig(cli.emulator, tmp_path / "batch.yaml", "batch")
    env = {"KUBECONFIG": str(kubeconfig)}

    listed = cli.command(["kubectl", "plugin", "list"], **env)
    assert str(PLUGIN) in listed.stdout, listed.stderr
    tree = cli.command(["kubectl", "jobnet", "tree", RUN], **env)
    assert tree.returncode == 0, tree.stderr
    assert f"JobRun {RUN} (namespace batch, JobNet nightly)" in tree.stdout and "HeartbeatLost" in tree.stdout
    override = cli.command(["kubectl", "jobnet", "override", RUN, "/nightly/load/step1", "Succeeded"], **env)
    assert override.returncode == 0, override.stderr
    assert cli.annotations(namespace="batch") == {"jobnet.dev/override": "/nightly/load/step1=Succeeded@Stuck#1"}
    assert cli.annotations(namespace="default") == {}
    refused = cli.command(["kubectl", "jobnet", "stop", RUN, "/nope", "-n", "default"], **env)
    assert refused.returncode == 1 and refused.stderr.startswith("kubectl jobnet stop: stop refused:")
    usage = cli.command(["kubectl", "jobnet", "logs", RUN], **env)
    assert usage.returncode == 2 and "the following arguments are required: PATH" in usage.stderr


def test_the_jobnet_command_has_the_same_subcommands(cli: Cli) -> None:
    result = cli.command(["jobnet", "stop", RUN, "/nightly/load", "--kubeconfig", str(cli.emulator.kubeconfig)])
    assert result.returncode == 0, result.stderr
    assert cli.annotations() == {"jobnet.dev/stop": "/nightly/load"}
    refused = cli.command(["jobnet", "stop", RUN, "/x", "--kubeconfig", str(cli.emulator.kubeconfig)])
    assert refused.stderr.startswith("jobnet stop: ")


def test_watch_redraws_in_place_on_a_terminal(cli: Cli) -> None:
    """On a TTY each frame clears the screen (the monitor-screen view)."""
    import os
    import pty

    controller, terminal = pty.openpty()
    argv = [
        str(PLUGIN),
        "tree",
        RUN,
        "--watch",
        "--interval",
        "0.2",
        "--timeout",
        "1",
        "--kubeconfig",
        str(cli.emulator.kubeconfig),
    ]
    process = subprocess.Popen(argv, stdout=terminal, stderr=subprocess.PIPE, env=cli.environment(TERM="xterm"))
    os.close(terminal)
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(controller, 65536)
            except OSError:  # the terminal closed: the process ended
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    assert process.wait(timeout=30) == 1
    reader.join(timeout=5)
    os.close(controller)
    screen = b"".join(chunks).decode(errors="replace")
    assert screen.count("\x1b[H\x1b[2J") >= 2, "redrawn at least twice within the 1 s timeout at 0.2 s intervals"
    assert "\x1b[1;35mStuck" in screen, "coloured on a terminal"
