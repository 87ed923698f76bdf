"""Every example is linted: the valid ones pass, the invalid ones fail with the expected messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobnet.core.env import job_environment
from jobnet.core.expansion import expand
from jobnet.manifests import lint

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
VALID = sorted(EXAMPLES.glob("*.yaml"))

#: Each invalid example and every problem line it must produce (after the file name).
INVALID = {
    "cycle.yaml": [":1 JobNet/cyclic spec.jobs[1].after[0]: dependency cycle: a -> b -> c -> a"],
    "dangling.yaml": [
        ":1 JobNet/dangling spec.jobs[1].after[0]: "
        "job 'transform' depends on 'extrakt', which is not a job of this JobNet"
    ],
    "missing-expansion.yaml": [
        ":1 JobNet/expands-nothing spec.jobs[0].expand: "
        "job 'load' expands JobNet 'no-such-jobnet', which does not exist"
    ],
    "self-expansion.yaml": [":1 JobNet/narcissus spec.jobs[0].expand: JobNet 'narcissus' expands itself"],
    "mutual-expansion.yaml": [
        ":1 JobNet/ring-x spec.jobs[0].expand: expansion cycle: ring-x -> ring-y -> ring-z -> ring-x",
        ":2 JobNet/ring-y spec.jobs[0].expand: expansion cycle: ring-y -> ring-z -> ring-x -> ring-y",
        ":3 JobNet/ring-z spec.jobs[0].expand: expansion cycle: ring-z -> ring-x -> ring-y -> ring-z",
    ],
    "bad-names.yaml": [
        ":1 JobNet/sloppy spec.jobs[3].aftr: unknown field",
        ":1 JobNet/sloppy spec.jobs[1].name: duplicate job name 'extract' (also spec.jobs[0])",
        ":1 JobNet/sloppy spec.jobs[2].name: invalid job name 'Transform_1': use at most 63 lowercase letters, "
        "digits and '-', starting and ending with a letter or digit",
        ":1 JobNet/sloppy spec.jobs[4]: job 'both' sets both script and expand: set exactly one",
        ":1 JobNet/sloppy spec.jobs[4].expand: JobNet 'sloppy' expands itself",
        ":2 JobNet/empty spec.jobs: needs at least 1 item, got 0",
    ],
    "missing-jobnet-run.yaml": [":1 JobRun/ghost-* spec.jobNetRef: JobNet 'ghost' does not exist in this namespace"],
    "bad-schedule.yaml": [
        ":1 JobSchedule/broken spec.schedules[0]: invalid cron expression '0 2 * * MONDAY': "
        "[0 2 * * monday] is not acceptable",
        ":1 JobSchedule/broken spec.timeZone: unknown time zone 'Asia/Tokio' "
        "(use an IANA name such as Asia/Tokyo or America/New_York)",
        ":1 JobSchedule/broken spec.jobNetRef: JobNet 'no-such-jobnet' does not exist in this namespace",
        ":1 JobSchedule/broken spec.calendarRef: JobCalendar 'no-such-calendar' does not exist in this namespace",
        ":2 JobCalendar/atlantis spec.publicHolidays: unknown country 'XA' for public holidays "
        "(use an ISO 3166-1 code such as JP, US, DE)",
    ],
}


def test_valid_examples_are_numbered_and_cover_the_documented_set():
    assert [p.name[:3] for p in VALID] == [
        "01-",
        "02-",
        "03-",
        "04-",
        "05-",
        "06-",
    ]  # 05: jobnet dev --demo (tests/devenv)


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_example_lints_clean_on_its_own(path):
    result = lint([path])
    assert result.lines() == []
    assert any(d.kind in ("JobRun", "JobSchedule") for d in result.documents), "every example shows how to run it"


def test_all_valid_examples_lint_clean_together():
    assert lint([EXAMPLES]).lines() == []


def test_every_invalid_example_is_covered():
    assert sorted(p.name for p in (EXAMPLES / "invalid").glob("*.yaml")) == sorted(INVALID)


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_example_fails_with_the_expected_messages(name):
    path = EXAMPLES / "invalid" / name
    assert lint([path]).lines() == [f"{path}{line}" for line in INVALID[name]]


def test_nested_expansion_example_gives_the_documented_ancestry():
    result = lint([EXAMPLES / "03-nested-expansion.yaml"])
    graph = expand("rjn0008", result.catalog, run_id="uid")
    env = job_environment(
        graph,
        "/rjn0008/rjn0001/j11",
        run_uid="uid",
        run_name="r",
        namespace="ns",
        run_env={},
        attempt=1,
        server_name="vm1",
    )
    assert env["MM_ACTUAL_JOB_ANCESTOR_IDS"] == "uid:/rjn0008/rjn0001"
    assert env["MM_FULL_ACTUAL_JOB_ANCESTOR_IDS"] == "uid:/rjn0008;uid:/rjn0008/rjn0001"
    assert env["MM_TEMPLATE_JOB_ID"] == "rjn0001/j11"
