"""``jobnet operator`` options: the operator-kept webhook certificate, leader election, and options from the
environment (the chart's extraEnv)."""

from __future__ import annotations

import argparse
import datetime

import pytest

from jobnet.core.lease import ElectionConfig
from jobnet.kube.cli import add_operator_arguments, certificate_config, config_from_arguments, defaults_from_environment


def parse(*args: str, environ: dict[str, str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="jobnet operator", exit_on_error=False)
    add_operator_arguments(parser)
    defaults_from_environment(parser, environ or {})
    return parser.parse_args(list(args))


def test_options_come_from_the_environment_and_the_command_line_wins() -> None:
    environ = {
        "JOBNET_OPERATOR_HEARTBEAT_DEADLINE": "45",
        "JOBNET_OPERATOR_METRICS_PORT": "9191",
        "JOBNET_OPERATOR_WEBHOOK_LISTEN_ADDRESS": "127.0.0.1",
        "JOBNET_OPERATOR_NAMESPACE": "ignored",  # repeatable options are command line only
        "JOBNET_OPERATOR_VERBOSE": "true",  # so are flags
    }
    args = parse(environ=environ)
    assert (args.heartbeat_deadline, args.metrics_port, args.webhook_listen_address) == (45.0, 9191, "127.0.0.1")
    assert args.namespaces == [] and args.verbose is False
    assert parse("--heartbeat-deadline=50", environ=environ).heartbeat_deadline == 50.0


def test_a_bad_value_in_the_environment_is_refused_like_the_option() -> None:
    with pytest.raises(argparse.ArgumentError, match="--heartbeat-deadline: must be a positive number"):
        parse(environ={"JOBNET_OPERATOR_HEARTBEAT_DEADLINE": "-1"})


def test_the_operator_kept_certificate() -> None:
    args = parse(
        "--webhook-tls-secret=jobnet-system/hook-tls",
        "--webhook-tls-name=hook.jobnet-system.svc",
        "--webhook-tls-name=hook",
        "--webhook-sync-ca-bundle=hooks",
        "--webhook-tls-validity-days=90",
        "--webhook-tls-renew-before-days=10",
    )
    certificate = config_from_arguments(args).webhook.certificate
    assert certificate is not None
    assert (certificate.secret, certificate.names, certificate.configuration) == (
        "jobnet-system/hook-tls",
        ("hook.jobnet-system.svc", "hook"),
        "hooks",
    )
    assert (certificate.validity, certificate.renew_before) == (
        datetime.timedelta(days=90),
        datetime.timedelta(days=10),
    )
    assert certificate_config(parse(), 1.0) is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--webhook-tls-secret=ns/s"], "needs at least one --webhook-tls-name"),
        (["--webhook-tls-name=x"], "need --webhook-tls-secret"),
        (["--webhook-tls-secret=ns/s", "--webhook-tls-name=x", "--webhook-insecure"], "cannot be combined"),
        (
            [
                "--webhook-tls-secret=ns/s",
                "--webhook-tls-name=x",
                "--webhook-tls-validity-days=5",
                "--webhook-tls-renew-before-days=5",
            ],
            "must be shorter than the validity",
        ),
    ],
)
def test_contradictory_certificate_options_are_refused(args: list[str], message: str) -> None:
    with pytest.raises(SystemExit, match=message):
        config_from_arguments(parse(*args))


def test_a_secret_is_named_namespace_slash_name() -> None:
    with pytest.raises((SystemExit, argparse.ArgumentError)):
        parse("--webhook-tls-secret=no-namespace")


def test_leader_election_defaults_to_client_gos_durations_and_a_fresh_identity() -> None:
    first, second = config_from_arguments(parse()), config_from_arguments(parse())
    assert first.election is not None and second.election is not None
    assert (first.election.namespace, first.election.name) == ("default", "jobnet-operator")
    election = first.election.election
    assert (election.lease_duration, election.renew_deadline, election.retry_period) == (15.0, 10.0, 2.0)
    assert election.identity != second.election.election.identity  # a restarted process is a new candidate


def test_leader_election_options() -> None:
    args = parse(
        "--leader-election-namespace=jobnet-system",
        "--lease-name=ops",
        "--leader-election-identity=pod-a",
        "--lease-duration=4",
        "--renew-deadline=3",
        "--retry-period=0.5",
    )
    election = config_from_arguments(args).election
    assert election is not None and (election.namespace, election.name) == ("jobnet-system", "ops")
    assert election.election == ElectionConfig("pod-a", lease_duration=4, renew_deadline=3, retry_period=0.5)
    assert config_from_arguments(parse("--no-leader-election")).election is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lease-duration=10", "--renew-deadline=10"], "must be longer than the renew deadline"),
        (["--renew-deadline=2", "--retry-period=2"], "must be longer than the retry period"),
    ],
)
def test_election_durations_that_break_the_guarantee_are_refused(args: list[str], message: str) -> None:
    with pytest.raises(SystemExit, match=message):
        config_from_arguments(parse(*args))
