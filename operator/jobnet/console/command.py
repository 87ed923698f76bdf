"""``jobnet console`` / ``kubectl jobnet console``: serve the operations console on 127.0.0.1.

Only the arguments are declared at import time; aiohttp, jinja2 and the Kubernetes client are
imported when the command runs, so ``jobnet lint`` stays light.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import webbrowser
from typing import TYPE_CHECKING

from jobnet.argtypes import add_host_alias_argument

if TYPE_CHECKING:
    from aiohttp import web

    from jobnet.console.kubeapi import ApiTarget

DEFAULT_PORT = 8765
EXIT_OK = 0
EXIT_FAILED = 1


def add_console_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
    parser.add_argument("--context", help="kubeconfig context (default: the current context)")
    parser.add_argument("-n", "--namespace", help="namespace shown first (default: the context's namespace)")
    parser.add_argument(
        "--address",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1; anything else only with --forward-token behind a proxy)",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT}; 0 = any free)")
    parser.add_argument("--open", action="store_true", help="open the console in the default browser")
    parser.add_argument(
        "--forward-token",
        action="store_true",
        help="in-cluster mode: act with each viewer's own bearer token (Authorization header set by an "
        "authenticating proxy), never with the console's own credentials",
    )
    add_host_alias_argument(
        parser,
        help="read a job's full output from ADDRESS when its host is NAME, as the operator's --host-alias "
        "(repeatable; `jobnet dev` sets it for its VM); the host key is still verified under NAME",
    )
    parser.set_defaults(handler=run_console, label=parser.prog)


def run_console(args: argparse.Namespace) -> int:
    from jobnet.console.kubeapi import ApiTarget, ConsoleConfigError, target_from_kubeconfig
    from jobnet.console.server import ConsoleSettings, build_app

    if args.address not in ("127.0.0.1", "localhost", "::1") and not args.forward_token:
        print(f"{args.label}: --address {args.address} needs --forward-token (see docs/console.md)", file=sys.stderr)
        return EXIT_FAILED
    try:
        if args.forward_token and args.kubeconfig is None:
            target = _in_cluster_target(args.namespace)
        else:
            target = target_from_kubeconfig(args.kubeconfig, args.context, args.namespace)
    except ConsoleConfigError as error:
        print(f"{args.label}: {error}", file=sys.stderr)
        return EXIT_FAILED
    if args.forward_token:
        target = ApiTarget(server=target.server, namespace=target.namespace, ssl_context=target.ssl_context)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = build_app(
        ConsoleSettings(target=target, forward_token=args.forward_token, host_aliases=tuple(args.host_aliases))
    )
    try:
        asyncio.run(_serve(app, args.address, args.port, args.open))
    except KeyboardInterrupt:
        pass
    except OSError as error:
        print(f"{args.label}: cannot listen on {args.address}:{args.port}: {error.strerror or error}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _in_cluster_target(namespace: str | None) -> ApiTarget:
    """The API server as seen from a pod (its CA; no credentials: each viewer brings their own)."""
    import os
    import ssl

    from jobnet.console.kubeapi import ApiTarget, ConsoleConfigError

    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        raise ConsoleConfigError("not in a cluster (no KUBERNETES_SERVICE_HOST): give --kubeconfig")
    account = "/var/run/secrets/kubernetes.io/serviceaccount"
    try:
        own_namespace = open(f"{account}/namespace", encoding="utf-8").read().strip()
        context = ssl.create_default_context(cafile=f"{account}/ca.crt")
    except OSError as error:
        raise ConsoleConfigError(f"cannot read the pod's service account files: {error}") from None
    server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    return ApiTarget(server=server, namespace=namespace or own_namespace, ssl_context=context)


async def _serve(app: web.Application, address: str, port: int, open_browser: bool) -> None:
    from aiohttp import web

    from jobnet.console.server import PathOnlyAccessLogger

    # handler_cancellation: an event stream's watches end as soon as its page goes away.
    runner = web.AppRunner(app, access_log_class=PathOnlyAccessLogger, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, address, port)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    host = f"[{address}]" if ":" in address else address
    url = f"http://{host}:{bound}/"
    print(f"jobnet console: {url}", flush=True)
    if open_browser:
        webbrowser.open(url)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
