"""The network helpers live in the product (``jobnet dev`` makes namespace VMs too); tests import them from here."""

from jobnet.devenv.net import (  # noqa: F401 (re-exports)
    VM_RANGE,
    DeadlineExceeded,
    host_networks,
    overlaps,
    tcp_port_open,
    wait_until,
)
