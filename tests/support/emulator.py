"""The Kubernetes API emulator lives in the product (``jobnet dev`` uses it); tests import it from here."""

from jobnet.devenv.emulator import (  # noqa: F401 (re-exports)
    CRD_DIRS,
    ApiEmulator,
    ApiError,
    EmulatorServer,
    KubectlResult,
    free_port,
)
