"""``jobnet operator``: command-line arguments and start-up of the kopf operator."""

from __future__ import annotations

import argparse
import datetime
import logging
import os
from collections.abc import Mapping

import kopf

from jobnet.argtypes import add_host_alias_argument, non_negative_seconds, positive_count, positive_seconds
from jobnet.core.lease import ElectionConfig, ElectionConfigError
from jobnet.kube.app import OperatorConfig, WebhookConfig, run_blocking
from jobnet.kube.certificates import CertificateConfig
from jobnet.kube.events import EventSettings
from jobnet.kube.leadership import LeaseSettings, default_identity
from jobnet.kube.runtime import JobRunRuntime, RuntimeConfig
from jobnet.ssh import SshSettings

LOG_FORMATS = {"json": kopf.LogFormat.JSON, "text": kopf.LogFormat.FULL}
#: Prefix of the environment variables that set the operator's options (``defaults_from_environment``).
ENVIRONMENT_PREFIX = "JOBNET_OPERATOR_"


def add_operator_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--namespace",
        dest="namespaces",
        action="append",
        default=[],
        metavar="NS",
        help="watch this namespace (repeatable; default: all namespaces)",
    )
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster service account, then $KUBECONFIG)")
    hook = parser.add_argument_group("admission webhook")
    hook.add_argument("--webhook-port", type=int, default=9443, help="port of the admission server (default: 9443)")
    hook.add_argument("--webhook-listen-address", default="0.0.0.0", help="address to listen on (default: 0.0.0.0)")
    hook.add_argument(
        "--webhook-host", help="host name the API server reaches the webhook at (default: the listen address)"
    )
    hook.add_argument("--webhook-cert", help="TLS certificate file of the admission server (PEM)")
    hook.add_argument("--webhook-key", help="TLS private key file of the admission server (PEM)")
    hook.add_argument(
        "--webhook-insecure",
        action="store_true",
        help="serve plain HTTP (tests and `jobnet dev` only; a real API server requires HTTPS)",
    )
    hook.add_argument(
        "--webhook-configuration",
        metavar="NAME",
        help="let the operator create and maintain the Validating- and MutatingWebhookConfiguration "
        "NAME (default: they are installed by the Helm chart)",
    )
    tls = parser.add_argument_group(
        "webhook certificate kept by the operator (instead of --webhook-cert/--webhook-key)"
    )
    tls.add_argument(
        "--webhook-tls-secret",
        type=namespaced_name,
        metavar="NAMESPACE/NAME",
        help="keep the webhook's CA and serving certificate in this Secret: issue them when it is empty, "
        "renew them before they expire; every replica serves what it holds",
    )
    tls.add_argument(
        "--webhook-tls-name",
        dest="webhook_tls_names",
        action="append",
        default=[],
        metavar="NAME",
        help="DNS name (or IP address) the certificate covers, e.g. the webhook Service's "
        "NAME.NAMESPACE.svc (repeatable; the first is the subject)",
    )
    tls.add_argument(
        "--webhook-sync-ca-bundle",
        metavar="NAME",
        help="keep the caBundle of the Validating- and MutatingWebhookConfiguration NAME equal to the Secret's CA",
    )
    tls.add_argument(
        "--webhook-tls-validity-days",
        type=positive_count,
        default=365,
        metavar="DAYS",
        help="lifetime of an issued CA and certificate (default: 365)",
    )
    tls.add_argument(
        "--webhook-tls-renew-before-days",
        type=positive_count,
        default=30,
        metavar="DAYS",
        help="renew this long before the certificate expires (default: 30)",
    )
    tls.add_argument(
        "--webhook-tls-check-interval",
        type=positive_seconds,
        default=3600.0,
        metavar="SECONDS",
        help="how often each replica reads the Secret again (renewal, another replica's rotation, "
        "a reset caBundle) (default: 3600)",
    )
    parser.add_argument(
        "--liveness-endpoint",
        default="http://0.0.0.0:8080/healthz",
        help="kopf's liveness endpoint URL (default: http://0.0.0.0:8080/healthz)",
    )
    election = parser.add_argument_group(
        "leader election (one replica drives the runs; every replica serves the webhook)"
    )
    election.add_argument(
        "--no-leader-election",
        action="store_true",
        help="do not elect a leader: this replica drives the runs at once (only ever run one replica then)",
    )
    election.add_argument(
        "--leader-election-namespace",
        default=os.environ.get("POD_NAMESPACE") or "default",
        metavar="NS",
        help="namespace of the Lease (default: $POD_NAMESPACE, else default)",
    )
    election.add_argument(
        "--lease-name", default="jobnet-operator", metavar="NAME", help="name of the Lease (default: jobnet-operator)"
    )
    election.add_argument(
        "--leader-election-identity",
        metavar="ID",
        help="this replica's name in the Lease (default: $POD_NAME, else $POD_ID, else the host name, "
        "with a random suffix)",
    )
    election.add_argument(
        "--lease-duration",
        type=positive_seconds,
        default=15.0,
        metavar="SECONDS",
        help="a Lease not renewed for this long may be taken over; a takeover after a leader's crash "
        "takes about this long (default: 15)",
    )
    election.add_argument(
        "--renew-deadline",
        type=positive_seconds,
        default=10.0,
        metavar="SECONDS",
        help="a leader that could not renew its Lease for this long stops acting; shorter than "
        "--lease-duration (default: 10)",
    )
    election.add_argument(
        "--retry-period",
        type=positive_seconds,
        default=2.0,
        metavar="SECONDS",
        help="between two tries to acquire or renew the Lease (default: 2)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        metavar="PORT",
        help="serve Prometheus metrics at http://ADDRESS:PORT/metrics (default: off)",
    )
    parser.add_argument("--metrics-address", default="0.0.0.0", help="address of the metrics server (default: 0.0.0.0)")
    parser.add_argument("--log-format", choices=sorted(LOG_FORMATS), default="text", help="log format (default: text)")
    parser.add_argument("--verbose", action="store_true", help="log kopf's debug and per-object INFO lines too")
    timing = parser.add_argument_group("deadlines (seconds)")
    timing.add_argument(
        "--watch-server-timeout",
        type=positive_seconds,
        default=60.0,
        help="the API server ends each watch request after this long (default: 60)",
    )
    timing.add_argument(
        "--watch-client-timeout",
        type=positive_seconds,
        default=75.0,
        help="give up on a silent watch request after this long (default: 75)",
    )
    timing.add_argument(
        "--connect-timeout", type=positive_seconds, default=10.0, help="TCP connect to the API server (default: 10)"
    )
    timing.add_argument("--request-timeout", type=positive_seconds, default=30.0, help="one API request (default: 30)")
    timing.add_argument(
        "--retry-delay",
        type=positive_seconds,
        default=5.0,
        help="before retrying a handler after an API failure (default: 5)",
    )
    timing.add_argument(
        "--api-retry-max-delay",
        type=positive_seconds,
        default=30.0,
        help="the longest wait between retries of a failed API request; requests are retried "
        "until the API server answers, never given up (default: 30)",
    )
    timing.add_argument(
        "--schedule-check-interval",
        type=positive_seconds,
        default=5.0,
        help="re-read the wall clock for due JobSchedule slots this often (default: 5)",
    )
    runtime = parser.add_argument_group("job runtime (seconds)")
    runtime.add_argument(
        "--heartbeat-deadline",
        type=positive_seconds,
        default=30.0,
        help="a running job whose agent stays silent this long goes Stuck (HeartbeatLost) (default: 30)",
    )
    runtime.add_argument(
        "--dispatch-timeout",
        type=positive_seconds,
        default=30.0,
        help="an unanswered launch/kill request counts as outcome unknown after this long (default: 30)",
    )
    runtime.add_argument(
        "--launch-retry-window",
        type=non_negative_seconds,
        default=60.0,
        help="a launch that never left because its VM could not be reached is retried (same key, "
        "backoff between --reconnect-backoff-min and -max) this long before the job fails "
        "HostUnreachable; 0: only the job's own retry.dispatchAttempts (default: 60)",
    )
    runtime.add_argument(
        "--kill-grace",
        type=non_negative_seconds,
        default=10.0,
        help="SIGTERM to SIGKILL when a job is stopped (default: 10)",
    )
    runtime.add_argument(
        "--agent-request-timeout",
        type=positive_seconds,
        default=10.0,
        help="one request to an agent, and opening its channel (default: 10)",
    )
    runtime.add_argument(
        "--ssh-connect-timeout", type=positive_seconds, default=5.0, help="TCP connect to a VM's sshd (default: 5)"
    )
    runtime.add_argument(
        "--ssh-handshake-timeout",
        type=positive_seconds,
        default=10.0,
        help="SSH handshake and authentication with a VM (default: 10)",
    )
    runtime.add_argument(
        "--ssh-keepalive", type=positive_seconds, default=5.0, help="SSH keepalive interval (default: 5)"
    )
    runtime.add_argument(
        "--ssh-dead-connection-timeout",
        type=positive_seconds,
        default=15.0,
        help="unacknowledged data older than this breaks an SSH connection (default: 15)",
    )
    runtime.add_argument(
        "--reconnect-backoff-min",
        type=positive_seconds,
        default=0.2,
        help="first delay before reconnecting to a VM (doubles per failure) (default: 0.2)",
    )
    runtime.add_argument(
        "--reconnect-backoff-max",
        type=positive_seconds,
        default=10.0,
        help="longest delay between reconnect attempts (default: 10)",
    )
    runtime.add_argument(
        "--max-inflight-launches-per-host",
        type=positive_count,
        default=16,
        metavar="N",
        help="launch requests in flight to one VM at once; the rest wait in the operator "
        "and their request timeout starts only when sent (default: 16)",
    )
    runtime.add_argument(
        "--agent-idle-timeout",
        type=positive_seconds,
        default=300.0,
        help="keep a VM's agent channel open this long after its last run ended, so that the next "
        "run starts without connecting; heartbeats are still checked meanwhile (default: 300)",
    )
    runtime.add_argument(
        "--observation-write-delay",
        type=float,
        default=1.0,
        help="how long the status write of a round that only learnt that a stored launch arrived "
        "(accepted, started) may wait to be made with a later round; 0: at once (default: 1)",
    )
    runtime.add_argument(
        "--event-retry-for",
        type=positive_seconds,
        default=300.0,
        help="how long an Event the API server did not take is tried again (backoff up to "
        "--reconnect-backoff-max) before it is given up with an ERROR log line (default: 300)",
    )
    runtime.add_argument(
        "--event-queue-size",
        type=positive_count,
        default=1000,
        metavar="N",
        help="Events waiting to be posted at most; one more is given up at once, logged at ERROR (default: 1000)",
    )
    runtime.add_argument(
        "--event-restore-window",
        type=positive_seconds,
        default=3600.0,
        help="an operator that takes over a run posts again the Events its status implies (terminal, "
        "Failed, Stopped, Stuck) that happened within this long; existing ones are answered 409 "
        "(default: 3600, the Kubernetes Event TTL)",
    )
    runtime.add_argument(
        "--agent-serve-arg",
        dest="agent_serve_args",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument of `jobnet-agent serve` on every VM, repeatable, "
        "e.g. --agent-serve-arg=--heartbeat-seconds --agent-serve-arg=1",
    )
    add_host_alias_argument(
        runtime,
        help="connect to ADDRESS whenever a JobNet's host is NAME, like a pod's hostAliases "
        "(repeatable); the host key is still verified against knownHosts under NAME",
    )
    defaults_from_environment(parser, os.environ)


def namespaced_name(text: str) -> tuple[str, str]:
    """``NAMESPACE/NAME``: a clear error for anything else."""
    namespace, separator, name = text.partition("/")
    if not separator or not namespace or not name or "/" in name:
        raise argparse.ArgumentTypeError(
            f"expected NAMESPACE/NAME (e.g. jobnet-system/jobnet-operator-webhook-tls), not {text!r}"
        )
    return namespace, name


def defaults_from_environment(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    """Every option that takes one value may also be set as ``JOBNET_OPERATOR_<OPTION>``
    (``--heartbeat-deadline 60`` is ``JOBNET_OPERATOR_HEARTBEAT_DEADLINE=60``), e.g. with the
    chart's ``extraEnv``. The command line wins; a bad value is refused like the option's."""
    for action in parser._actions:
        single_value = action.nargs is None and not isinstance(action, argparse._AppendAction)
        if not single_value or not action.option_strings:
            continue
        variable = ENVIRONMENT_PREFIX + action.option_strings[-1].lstrip("-").replace("-", "_").upper()
        if variable in environ:
            # A string default is parsed as if given on the command line (its type and checks apply).
            action.default = environ[variable]


def certificate_config(args: argparse.Namespace, retry_delay: float) -> CertificateConfig | None:
    """What ``--webhook-tls-*`` ask for; a clear error (SystemExit) for contradictions."""
    if args.webhook_tls_secret is None:
        if args.webhook_tls_names or args.webhook_sync_ca_bundle:
            raise SystemExit(
                "jobnet operator: --webhook-tls-name and --webhook-sync-ca-bundle need --webhook-tls-secret"
            )
        return None
    if args.webhook_cert or args.webhook_insecure:
        raise SystemExit(
            "jobnet operator: --webhook-tls-secret cannot be combined with "
            "--webhook-cert/--webhook-key/--webhook-insecure"
        )
    if not args.webhook_tls_names:
        raise SystemExit("jobnet operator: --webhook-tls-secret needs at least one --webhook-tls-name")
    if args.webhook_tls_renew_before_days >= args.webhook_tls_validity_days:
        raise SystemExit("jobnet operator: --webhook-tls-renew-before-days must be shorter than the validity")
    namespace, name = args.webhook_tls_secret
    return CertificateConfig(
        secret_namespace=namespace,
        secret_name=name,
        names=tuple(args.webhook_tls_names),
        configuration=args.webhook_sync_ca_bundle,
        validity=datetime.timedelta(days=args.webhook_tls_validity_days),
        renew_before=datetime.timedelta(days=args.webhook_tls_renew_before_days),
        check_interval=args.webhook_tls_check_interval,
        retry_delay=retry_delay,
    )


def lease_settings(args: argparse.Namespace) -> LeaseSettings | None:
    """The leader election asked for (None: ``--no-leader-election``); a clear error
    (SystemExit) for durations that cannot keep one driver per run."""
    if args.no_leader_election:
        return None
    try:
        election = ElectionConfig(
            identity=args.leader_election_identity or default_identity(),
            lease_duration=args.lease_duration,
            renew_deadline=args.renew_deadline,
            retry_period=args.retry_period,
        )
    except ElectionConfigError as e:
        raise SystemExit(f"jobnet operator: {e}") from None
    return LeaseSettings(args.leader_election_namespace, args.lease_name, election)


def config_from_arguments(args: argparse.Namespace) -> OperatorConfig:
    """The operator's configuration; a clear error (SystemExit) for contradictory arguments."""
    if args.kubeconfig and not os.path.isfile(args.kubeconfig):
        raise SystemExit(f"jobnet operator: --kubeconfig {args.kubeconfig}: no such file")
    if bool(args.webhook_cert) != bool(args.webhook_key):
        raise SystemExit("jobnet operator: --webhook-cert and --webhook-key go together")
    if args.webhook_insecure and args.webhook_cert:
        raise SystemExit("jobnet operator: --webhook-insecure cannot be combined with --webhook-cert/--webhook-key")
    if args.watch_client_timeout <= args.watch_server_timeout:
        raise SystemExit("jobnet operator: --watch-client-timeout must be longer than --watch-server-timeout")
    return OperatorConfig(
        namespaces=tuple(args.namespaces),
        kubeconfig=args.kubeconfig,
        webhook=WebhookConfig(
            port=args.webhook_port,
            listen_address=args.webhook_listen_address,
            host=args.webhook_host,
            cert_file=args.webhook_cert,
            key_file=args.webhook_key,
            insecure=args.webhook_insecure,
            managed_configuration=args.webhook_configuration,
            certificate=certificate_config(args, args.retry_delay),
        ),
        liveness_endpoint=args.liveness_endpoint or None,
        election=lease_settings(args),
        watch_server_timeout=args.watch_server_timeout,
        watch_client_timeout=args.watch_client_timeout,
        connect_timeout=args.connect_timeout,
        request_timeout=args.request_timeout,
        retry_delay=args.retry_delay,
        api_retry_max_delay=args.api_retry_max_delay,
        schedule_check_interval=args.schedule_check_interval,
    )


def runtime_config_from_arguments(args: argparse.Namespace) -> RuntimeConfig:
    if args.reconnect_backoff_max < args.reconnect_backoff_min:
        raise SystemExit("jobnet operator: --reconnect-backoff-max must not be shorter than --reconnect-backoff-min")
    aliased = [name for name, _ in args.host_aliases]
    if len(set(aliased)) != len(aliased):
        raise SystemExit(
            f"jobnet operator: --host-alias names a host twice: {sorted({n for n in aliased if aliased.count(n) > 1})}"
        )
    if args.kill_grace < 0:
        raise SystemExit(f"jobnet operator: --kill-grace must be >= 0, not {args.kill_grace}")
    ssh = SshSettings(
        connect_timeout=args.ssh_connect_timeout,
        handshake_timeout=args.ssh_handshake_timeout,
        auth_timeout=args.ssh_handshake_timeout,
        keepalive_interval=args.ssh_keepalive,
        dead_connection_timeout=args.ssh_dead_connection_timeout,
        reconnect_backoff_min=args.reconnect_backoff_min,
        reconnect_backoff_max=args.reconnect_backoff_max,
        host_aliases=dict(args.host_aliases),
    )
    return RuntimeConfig(
        heartbeat_deadline=args.heartbeat_deadline,
        dispatch_timeout=args.dispatch_timeout,
        kill_grace=args.kill_grace,
        agent_request_timeout=args.agent_request_timeout,
        agent_serve_args=tuple(args.agent_serve_args),
        ssh=ssh,
        api_retry_delay=args.retry_delay,
        max_inflight_launches_per_host=args.max_inflight_launches_per_host,
        launch_retry_window=args.launch_retry_window,
        agent_idle_timeout=args.agent_idle_timeout,
        observation_write_delay=args.observation_write_delay,
        events=EventSettings(
            queue_size=args.event_queue_size,
            retry_for=args.event_retry_for,
            backoff_min=args.reconnect_backoff_min,
            backoff_max=args.reconnect_backoff_max,
            restore_window=args.event_restore_window,
        ),
    )


def run_operator(args: argparse.Namespace) -> int:
    config = config_from_arguments(args)
    kopf.configure(verbose=args.verbose, log_format=LOG_FORMATS[args.log_format])
    logging.getLogger("jobnet").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    # kopf says "Handler '...' succeeded." (and "... is processed") at INFO for every watch event
    # and admission request of every object: several lines per JobRun, a tenth of the operator's
    # CPU in a burst of scheduled runs. Its warnings and errors stay; --verbose shows everything.
    logging.getLogger("kopf.objects").setLevel(logging.NOTSET if args.verbose else logging.WARNING)
    # aiohttp logs every request its servers answer (admission reviews, liveness probes) at INFO:
    # two lines per JobRun created. A failed check is logged by the webhook itself.
    logging.getLogger("aiohttp.access").setLevel(logging.NOTSET if args.verbose else logging.WARNING)
    if args.metrics_port is not None:
        from jobnet.metrics import operator_metrics

        try:
            operator_metrics.serve(args.metrics_port, args.metrics_address)
        except (OSError, OverflowError) as error:
            raise SystemExit(
                f"jobnet operator: cannot serve metrics on {args.metrics_address}:{args.metrics_port}: {error}"
            ) from error
    run_blocking(config, JobRunRuntime(runtime_config_from_arguments(args)))
    return 0
