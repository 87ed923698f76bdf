from tests.support.vm import vm, vm_factory  # noqa: F401 (pytest fixtures)
