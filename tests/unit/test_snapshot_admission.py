"""Admission refuses a JobNet no run of which could start: its snapshot (the JobNets it uses,
gzipped) would not fit the ConfigMap that holds a run's definition (jobnet.core.snapshot)."""

from __future__ import annotations

import base64

from jobnet.core.models import JobNetSpec
from jobnet.core.snapshot import SNAPSHOT_MAX_BYTES, encode_snapshot, snapshot_size_problem

HOST = {"address": "vm1", "user": "batch", "credentialsSecret": "vm1-ssh"}


def spec(*jobs: dict[str, object]) -> JobNetSpec:
    return JobNetSpec.model_validate({"host": HOST, "jobs": list(jobs)})


def test_a_jobnet_whose_snapshot_fits_passes() -> None:
    assert snapshot_size_problem("small", spec({"name": "a", "script": "/bin/true"}), {}) is None


def test_a_jobnet_whose_snapshot_with_its_expansions_does_not_fit_is_refused_saying_what_to_do() -> None:
    leaf = spec(*({"name": f"j{i}", "script": "/bin/true", "args": [f"{i:08x}" * 4]} for i in range(200)))
    root = spec({"name": "x", "expand": "leaf"})
    size = len(base64.b64decode(encode_snapshot({"root": root, "leaf": leaf})))
    assert snapshot_size_problem("root", root, {"leaf": leaf}, limit=size) is None  # exactly fits
    problem = snapshot_size_problem("root", root, {"leaf": leaf}, limit=size - 1)
    assert problem is not None
    assert "JobNets it uses (leaf, root)" in problem and f"takes {size} bytes gzipped" in problem
    assert "make it smaller" in problem and "separate JobRuns" in problem
    assert SNAPSHOT_MAX_BYTES < 1024 * 1024  # the ConfigMap limit, with room for its metadata


def test_a_missing_expansion_is_left_to_validation() -> None:
    assert snapshot_size_problem("root", spec({"name": "x", "expand": "gone"}), {}, limit=1) is None
