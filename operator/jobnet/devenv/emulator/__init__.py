"""A Kubernetes API server emulator for tests and ``jobnet dev`` (what it does: see :mod:`.api`).

The package, from the pure parts to the edge:

* :mod:`.kube`: Kubernetes API helpers (errors, paths and request attributes, names,
  selectors, merge and JSON patches); :mod:`.schema`: structural schemas (pruning, validation);
  :mod:`.authorization`: RBAC evaluation; :mod:`.deletion`: finalizer and garbage-collection
  rules; :mod:`.protobuf`: the few protobuf requests kubectl sends; all pure;
* :mod:`.bootstrap`: the RBAC objects every cluster starts with; :mod:`.tls`: the serving
  certificate of the HTTPS port;
* :mod:`.store`: objects, resourceVersions, the watch log and watchers, the garbage collector;
  :mod:`.admission`: schema checks and pruning, size limits, admission webhooks;
  :mod:`.access`: authentication, impersonation, RBAC authorization, access reviews, tokens;
  :mod:`.discovery`: the discovery documents;
* :mod:`.api`: the request handler (:class:`ApiEmulator`) that routes each request through
  them; kmock's bundled resource catalogue is used, not subclassed;
  :attr:`ApiEmulator.interceptors` lets a caller answer requests first;
* :mod:`.server`: :class:`EmulatorServer`, the handler served over HTTP and HTTPS on 127.0.0.1
  from a background thread, with kubectl and kubeconfigs for it.
"""

from jobnet.devenv.emulator.api import CRD_DIRS, ApiEmulator, Interceptor
from jobnet.devenv.emulator.kube import ApiError
from jobnet.devenv.emulator.server import (
    PORT_BASE_VARIABLE,
    PORT_BLOCK_SIZE,
    EmulatorServer,
    KubectlResult,
    free_port,
)

__all__ = [
    "CRD_DIRS",
    "PORT_BASE_VARIABLE",
    "PORT_BLOCK_SIZE",
    "ApiEmulator",
    "ApiError",
    "EmulatorServer",
    "Interceptor",
    "KubectlResult",
    "free_port",
]
