"""MM_* (Tengine-compatible) and JOBNET_* variables, checked on the reference's nested example."""

from __future__ import annotations

import pytest

from jobnet.core.env import job_environment
from jobnet.core.expansion import expand
from jobnet.core.models import JobNetSpec

VM1 = {"address": "vm1.batch.example", "user": "batch", "credentialsSecret": "vm1-ssh"}
RUN_UID = "6f1c2a9e-0000-4000-8000-000000000001"


@pytest.fixture
def graph():
    catalog = {
        "rjn0008": JobNetSpec.model_validate(
            {
                "host": VM1,
                "env": {"SHARED": "rjn0008", "ONLY_OUTER": "1"},
                "jobs": [
                    {"name": "j1", "script": "/usr/bin/env", "env": {"JOB": "j1"}},
                    {"name": "rjn0001", "expand": "rjn0001", "after": ["j1"]},
                ],
            }
        ),
        "rjn0001": JobNetSpec.model_validate(
            {"env": {"SHARED": "rjn0001"}, "jobs": [{"name": "j11", "script": "/usr/bin/env", "env": {"JOB": "j11"}}]}
        ),
    }
    return expand("rjn0008", catalog, run_id=RUN_UID)


def environment(graph, path: str, run_env: dict | None = None) -> dict[str, str]:
    return job_environment(
        graph,
        path,
        run_uid=RUN_UID,
        run_name="rjn0008-x7k2p",
        namespace="batch",
        run_env=run_env or {},
        attempt=2,
        server_name="vm1.batch.example",
    )


def test_job_inside_a_nested_expansion(graph):
    env = environment(graph, "/rjn0008/rjn0001/j11")
    root_id, sub_id = f"{RUN_UID}:/rjn0008", f"{RUN_UID}:/rjn0008/rjn0001"
    assert {k: v for k, v in env.items() if k.startswith(("MM_", "JOBNET_"))} == {
        "MM_ACTUAL_JOB_ID": f"{RUN_UID}:/rjn0008/rjn0001/j11",
        "MM_ACTUAL_JOB_NAME_PATH": "/rjn0008/rjn0001/j11",
        "MM_ACTUAL_JOB_ANCESTOR_IDS": sub_id,
        "MM_FULL_ACTUAL_JOB_ANCESTOR_IDS": f"{root_id};{sub_id}",
        "MM_TEMPLATE_JOB_ID": "rjn0001/j11",
        "MM_TEMPLATE_JOB_ANCESTOR_IDS": "rjn0001",
        "MM_ROOT_JOBNET_ID": root_id,
        "MM_TARGET_JOBNET_ID": sub_id,
        "MM_SCHEDULE_ID": RUN_UID,
        "MM_SERVER_NAME": "vm1.batch.example",
        "JOBNET_RUN": "rjn0008-x7k2p",
        "JOBNET_RUN_UID": RUN_UID,
        "JOBNET_JOB_PATH": "/rjn0008/rjn0001/j11",
        "JOBNET_ATTEMPT": "2",
        "JOBNET_NAMESPACE": "batch",
    }
    assert env["SHARED"] == "rjn0001" and env["ONLY_OUTER"] == "1" and env["JOB"] == "j11"


def test_job_of_the_root_jobnet(graph):
    env = environment(graph, "/rjn0008/j1")
    assert env["MM_ACTUAL_JOB_ANCESTOR_IDS"] == env["MM_FULL_ACTUAL_JOB_ANCESTOR_IDS"] == f"{RUN_UID}:/rjn0008"
    assert env["MM_TEMPLATE_JOB_ID"] == "rjn0008/j1"
    assert env["MM_TEMPLATE_JOB_ANCESTOR_IDS"] == "rjn0008"
    assert env["MM_TARGET_JOBNET_ID"] == env["MM_ROOT_JOBNET_ID"]


def test_precedence_node_env_then_run_env_then_ours(graph):
    env = environment(
        graph, "/rjn0008/j1", run_env={"JOB": "from-run", "RUN_DATE": "2026-11-22", "MM_SCHEDULE_ID": "forged"}
    )
    assert env["JOB"] == "from-run"
    assert env["RUN_DATE"] == "2026-11-22"
    assert env["SHARED"] == "rjn0008"
    assert env["MM_SCHEDULE_ID"] == RUN_UID


def test_only_jobs_get_an_environment(graph):
    with pytest.raises(ValueError, match="'/rjn0008/rjn0001' is a jobnet, not a job"):
        environment(graph, "/rjn0008/rjn0001")
