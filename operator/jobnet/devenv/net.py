"""Small network helpers of namespace VMs (tests and `jobnet dev`): polling with a deadline, address checks."""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

#: RFC 2544 benchmarking range: the only addresses the test VMs ever use.
VM_RANGE = ipaddress.IPv4Network("198.18.0.0/15")


class DeadlineExceeded(AssertionError):
    """A polled condition did not become true in time."""


def wait_until(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
    describe: Callable[[], str] | None = None,
    ignoring: tuple[type[Exception], ...] = (Exception,),
) -> T:
    """Call ``probe`` every ``interval`` seconds until it returns a truthy value, which is returned;
    after ``timeout`` seconds raise :class:`DeadlineExceeded` naming ``what``, the last value (or
    error) and ``describe()``, the state that explains why. The one polling loop of `jobnet dev`
    and of the tests (which import it from tests/support).

    An exception of the ``ignoring`` types from ``probe`` counts as "not yet" (a server still
    starting, a file not written yet; the last one is chained to the failure); any other ends the
    wait at once (``ignoring=()``: a probe that raises to say "this will never happen")."""
    deadline = time.monotonic() + timeout
    attempts = 0
    while True:
        attempts += 1
        last_error: Exception | None = None
        try:
            value = probe()
        except ignoring as exc:
            last_error = exc
        else:
            if value:
                return value
        if time.monotonic() >= deadline:
            last = f"error {last_error!r}" if last_error is not None else f"value {_shortened(repr(value))}"
            why = f"\n{describe()}" if describe is not None else ""
            raise DeadlineExceeded(
                f"{what} not reached within {timeout:g}s after {attempts} probes (last {last}){why}"
            ) from last_error
        time.sleep(interval)


def _shortened(text: str, limit: int = 500) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def tcp_port_open(address: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def _ip_json(*args: str) -> list[dict[str, Any]]:
    out = subprocess.run(["ip", "-j", *args], check=True, capture_output=True, text=True, timeout=10)
    entries: list[dict[str, Any]] = json.loads(out.stdout or "[]")
    return entries


def host_networks() -> Iterator[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]]:
    """Every IPv4 network this host has an address in or a route to, with a description."""
    for link in _ip_json("addr"):
        for info in link.get("addr_info", []):
            if info.get("family") == "inet":
                net = ipaddress.ip_interface(f"{info['local']}/{info['prefixlen']}").network
                yield net, f"address {info['local']}/{info['prefixlen']} on {link['ifname']}"
    for route in _ip_json("route", "show", "table", "all"):
        dst = route.get("dst", "")
        if dst in ("", "default") or ":" in dst:
            continue
        try:
            net = ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False)
        except ValueError:
            continue
        if route.get("type") == "blackhole" and net == VM_RANGE:
            continue  # the VMs' own safety net, see vm.ensure_safety_route
        yield net, f"route {dst} ({route.get('type', 'unicast')}, dev {route.get('dev', '-')})"


def overlaps(subnet: ipaddress.IPv4Network) -> list[str]:
    """Descriptions of every host address or route that overlaps ``subnet``."""
    return [desc for net, desc in host_networks() if net.version == 4 and net.overlaps(subnet)]
