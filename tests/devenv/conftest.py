from __future__ import annotations

from collections.abc import Iterator

import pytest

from jobnet.devenv.vm import NamespaceVM, missing_requirements


@pytest.fixture
def vm() -> Iterator[NamespaceVM]:
    """A fresh namespace VM of this test's own (skips when VMs cannot run here)."""
    reason = missing_requirements()
    if reason:
        pytest.skip(reason)
    with NamespaceVM(label="devenv test") as made:
        yield made
