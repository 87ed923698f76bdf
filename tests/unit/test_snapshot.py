"""The JobNet snapshot of a run (jobnet.core.snapshot): what it holds, that it decodes to exactly
the specs it was made of (so a resumed run expands to the same graph), that a changed or broken
snapshot is refused clearly, and how large it gets for 10,000-job runs (docs/scale.md)."""

from __future__ import annotations

import base64
import gzip
import json
import random
import re
import string
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobnet.core.expansion import ExpansionError, expand
from jobnet.core.models import JobNetSpec
from jobnet.core.runstatus import StatusEncoder, status_patch
from jobnet.core.snapshot import (
    RUN_UID_LABEL,
    SNAPSHOT_FORMAT,
    SNAPSHOT_KEY,
    SNAPSHOT_MAX_BYTES,
    SnapshotError,
    decode_snapshot,
    encode_snapshot,
    snapshot_configmap,
    snapshot_configmap_name,
    snapshot_sha256,
    snapshot_status,
    used_jobnets,
)
from jobnet.core.status import JobRunStatus
from tests.support.scheduler_sim import HOST, job, sub
from tests.unit.test_runstatus import merge
from tests.unit.test_status_size import MiB, decision_of, finished_runtime, first_write, object_size

UID = "0f3c2a1e-5b7d-4c9e-8a6f-1d2e3f4a5b6c"
RUN = {
    "apiVersion": "jobnet.dev/v1alpha1",
    "kind": "JobRun",
    "metadata": {"name": "nightly-1", "namespace": "batch", "uid": UID},
}
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def catalog_of(**jobnets: dict[str, Any]) -> dict[str, JobNetSpec]:
    return {name: JobNetSpec.model_validate({"host": HOST, **spec}) for name, spec in jobnets.items()}


NIGHTLY = catalog_of(
    nightly={
        "jobs": [job("extract"), sub("load", "load-jobnet", "extract"), sub("again", "load-jobnet", "load")],
        "finally": [job("report")],
        "env": {"REGION": "eu"},
        "stuckResolution": "Manual",
    },
    **{"load-jobnet": {"jobs": [job("step1"), sub("check", "check-jobnet", "step1")], "timeoutSeconds": 60}},
    **{"check-jobnet": {"jobs": [job("probe", args=["--deep"], env={"LEVEL": "2"})]}},
    unrelated={"jobs": [job("other")]},
)


def snapshot_of(catalog: dict[str, JobNetSpec], root: str) -> tuple[dict[str, JobNetSpec], str, Any]:
    used = used_jobnets(root, catalog)
    data = encode_snapshot(used)
    status = snapshot_status(snapshot_configmap_name("run", UID), data, {}, used)
    return used, data, status


def test_the_snapshot_holds_the_root_and_every_jobnet_it_expands_transitively_and_nothing_else() -> None:
    used = used_jobnets("nightly", NIGHTLY)
    assert list(used) == ["nightly", "load-jobnet", "check-jobnet"]
    assert used["check-jobnet"] is NIGHTLY["check-jobnet"]


def test_a_missing_jobnet_is_named() -> None:
    with pytest.raises(SnapshotError, match="JobNet 'nope' does not exist"):
        used_jobnets("nope", NIGHTLY)
    broken = {**NIGHTLY, "load-jobnet": NIGHTLY["load-jobnet"]}
    del broken["check-jobnet"]
    with pytest.raises(SnapshotError, match="JobNet 'load-jobnet' expands JobNet 'check-jobnet', which does not exist"):
        used_jobnets("nightly", broken)


def test_a_run_expanded_from_its_snapshot_has_the_graph_it_started_with_whatever_the_jobnets_are_now() -> None:
    used, data, status = snapshot_of(NIGHTLY, "nightly")
    started = expand("nightly", NIGHTLY, run_id=UID)

    # Meanwhile a job is added to the root and the script of an expanded JobNet changes ...
    edited = {
        **NIGHTLY,
        **catalog_of(
            nightly={
                **NIGHTLY["nightly"].model_dump(by_alias=True, exclude_defaults=True),
                "jobs": [*NIGHTLY["nightly"].model_dump(by_alias=True, exclude_defaults=True)["jobs"], job("added")],
            },
            **{"check-jobnet": {"jobs": [job("probe", args=["--quick"])]}},
        ),
    }
    assert expand("nightly", edited, run_id=UID) != started
    # ... and then the expanded JobNet is deleted: the current JobNets do not even expand any more.
    del edited["check-jobnet"]
    with pytest.raises(ExpansionError, match="check-jobnet"):
        expand("nightly", edited, run_id=UID)

    restored = decode_snapshot(data, status)
    assert restored == used
    assert expand("nightly", restored, run_id=UID) == started
    assert restored["nightly"].stuck_resolution == "Manual"  # the policy comes from the snapshot too


def test_the_snapshot_is_readable_gzip_json_of_name_to_spec_with_defaults_left_out() -> None:
    _, data, status = snapshot_of(NIGHTLY, "nightly")
    raw = gzip.decompress(base64.b64decode(data))
    assert status.size_bytes == len(base64.b64decode(data))
    specs = json.loads(raw)
    assert list(specs) == sorted(["nightly", "load-jobnet", "check-jobnet"])
    assert specs["check-jobnet"]["jobs"] == [
        {"name": "probe", "script": "/opt/probe.sh", "args": ["--deep"], "env": {"LEVEL": "2"}}
    ]
    assert specs["nightly"]["finally"] == [{"name": "report", "script": "/opt/report.sh"}]
    assert encode_snapshot(used_jobnets("nightly", NIGHTLY)) == data  # deterministic


def test_the_status_names_the_configmap_the_digest_and_the_versions_of_the_jobnets() -> None:
    used = used_jobnets("nightly", NIGHTLY)
    data = encode_snapshot(used)
    versions = {"nightly": {"resourceVersion": "41", "generation": 3}, "load-jobnet": {"resourceVersion": "7"}}
    status = snapshot_status("nightly-1-jobnets-x", data, versions, used)
    dumped = JobRunStatus.model_validate({"jobNetSnapshot": status.model_dump(by_alias=True)}).model_dump(
        by_alias=True, exclude_none=True
    )["jobNetSnapshot"]
    assert dumped == {
        "configMap": "nightly-1-jobnets-x",
        "key": SNAPSHOT_KEY,
        "format": SNAPSHOT_FORMAT,
        "sha256": snapshot_sha256(data),
        "sizeBytes": len(base64.b64decode(data)),
        "jobNets": [
            {"name": "nightly", "resourceVersion": "41", "generation": 3},
            {"name": "load-jobnet", "resourceVersion": "7"},
            {"name": "check-jobnet"},
        ],
    }


def test_a_snapshot_that_is_not_the_one_the_run_started_with_is_refused() -> None:
    _, data, status = snapshot_of(NIGHTLY, "nightly")
    _, other, _ = snapshot_of(NIGHTLY, "load-jobnet")
    with pytest.raises(SnapshotError, match="it was replaced after the run started"):
        decode_snapshot(other, status)
    with pytest.raises(SnapshotError, match="format 'zstd-v9'; this operator reads 'gzip-json-v1'"):
        decode_snapshot(data, status.model_copy(update={"format": "zstd-v9"}))
    with pytest.raises(SnapshotError, match="not base64"):
        decode_snapshot("not base64!", status)
    with pytest.raises(SnapshotError, match=f"ConfigMap 'run-jobnets-{UID}' holds no binaryData 'jobnets.json.gz'"):
        decode_snapshot("", status)


def test_undecodable_or_invalid_contents_are_named() -> None:
    _, _, status = snapshot_of(NIGHTLY, "nightly")
    garbage = base64.b64encode(b"not gzip").decode()
    with pytest.raises(SnapshotError, match="not gzipped JSON of JobNet name -> spec"):
        decode_snapshot(garbage, status.model_copy(update={"sha256": snapshot_sha256(garbage)}))
    invalid = base64.b64encode(gzip.compress(json.dumps({"bad": {"jobs": []}}).encode())).decode()
    with pytest.raises(SnapshotError, match="JobNet 'bad' of the snapshot is not a valid spec"):
        decode_snapshot(invalid, status.model_copy(update={"sha256": snapshot_sha256(invalid)}))


def test_the_configmap_is_owned_by_the_run_immutable_and_named_after_it() -> None:
    data = encode_snapshot(used_jobnets("nightly", NIGHTLY))
    configmap = snapshot_configmap(RUN, data)
    assert configmap["metadata"] == {
        "name": f"nightly-1-jobnets-{UID}",
        "namespace": "batch",
        "labels": {RUN_UID_LABEL: UID},
        "ownerReferences": [
            {"apiVersion": "jobnet.dev/v1alpha1", "kind": "JobRun", "name": "nightly-1", "uid": UID, "controller": True}
        ],
    }
    assert configmap["immutable"] is True and configmap["binaryData"] == {SNAPSHOT_KEY: data}


@pytest.mark.parametrize("run_name", ["a", "x" * 253, "a." * 120 + "b", "run-" + "y" * 205 + ".-z"])
def test_the_configmap_name_is_a_valid_object_name_for_any_run_name(run_name: str) -> None:
    name = snapshot_configmap_name(run_name, UID)
    assert len(name) <= 253 and DNS_SUBDOMAIN.match(name), name
    assert name.endswith(f"-jobnets-{UID}")


@pytest.mark.randomized(seed=3)
def test_a_snapshot_too_large_for_a_configmap_is_refused_naming_the_jobnets(rng: random.Random) -> None:
    noise = "".join(rng.choice(string.ascii_letters) for _ in range(800_000))
    huge = catalog_of(big={"jobs": [job("a", env={"NOISE": noise})], "finally": [job("b", env={"MORE": noise[::-1]})]})
    data = encode_snapshot(huge)
    with pytest.raises(SnapshotError, match=rf"more than a ConfigMap holds \({SNAPSHOT_MAX_BYTES}\); JobNets big"):
        snapshot_status("c", data, {}, huge)


# ----------------------------------------------------------------------- round trip (property)

_names = st.from_regex(r"\A[a-z][a-z0-9]{0,6}\Z")
_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
_env = st.dictionaries(st.from_regex(r"\A[A-Z][A-Z0-9_]{0,5}\Z"), _text, max_size=3)
_host = st.fixed_dictionaries(
    {"address": st.sampled_from(["vm1", "10.0.0.7"]), "user": st.just("batch"), "credentialsSecret": st.just("s")},
    optional={"port": st.integers(1, 65535)},
)
_retry = st.fixed_dictionaries(
    {}, optional={"dispatchAttempts": st.integers(1, 100), "intervalSeconds": st.floats(0, 3600, allow_nan=False)}
)


@st.composite
def _jobs(draw: st.DrawFn, min_size: int) -> list[dict[str, Any]]:
    names = draw(st.lists(_names, min_size=min_size, max_size=5, unique=True))
    jobs = []
    for index, name in enumerate(names):
        entry: dict[str, Any] = {
            "name": name,
            "after": draw(st.lists(st.sampled_from(names[:index]), unique=True)) if index else [],
        }
        if draw(st.booleans()):
            entry["expand"] = draw(_names)
        else:
            entry["script"] = "/opt/" + name
            entry["args"] = draw(st.lists(_text, max_size=3))
            entry.update(draw(st.fixed_dictionaries({}, optional={"workingDir": st.just("/tmp")})))
        entry.update(
            draw(
                st.fixed_dictionaries(
                    {}, optional={"env": _env, "host": _host, "timeoutSeconds": st.integers(1, 10**6), "retry": _retry}
                )
            )
        )
        jobs.append(entry)
    return jobs


_spec = st.builds(
    lambda jobs, fin, extra: {"jobs": jobs, "finally": fin, **extra},
    _jobs(1),
    _jobs(0),
    st.fixed_dictionaries(
        {},
        optional={
            "description": _text,
            "host": _host,
            "timeoutSeconds": st.integers(1, 10**6),
            "retry": _retry,
            "env": _env,
            "stuckResolution": st.sampled_from(["Auto", "Manual"]),
        },
    ),
)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(_names, _spec, min_size=1, max_size=4))
def test_any_specs_decode_to_exactly_what_was_encoded(raw: dict[str, dict[str, Any]]) -> None:
    specs = {name: JobNetSpec.model_validate(spec) for name, spec in raw.items()}
    data = encode_snapshot(specs)
    status = snapshot_status("c", data, {}, specs)
    assert decode_snapshot(data, status) == specs


# ----------------------------------------------------------------------- size (docs/scale.md)


def flat_jobnet(jobs: int, rng: random.Random) -> dict[str, JobNetSpec]:
    """One JobNet of ``jobs`` chained jobs with random (incompressible) names, scripts, args and
    env: the largest snapshot a 10,000-job run can have short of absurdly long fields."""

    def word(length: int) -> str:
        return "".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(length))

    names = [word(12) for _ in range(jobs)]
    return catalog_of(
        flat={
            "jobs": [
                {
                    "name": name,
                    "script": f"/opt/{word(20)}.sh",
                    "args": ["--part", word(8)],
                    "env": {"PART": word(6)},
                    "after": [names[index - 1]] if index else [],
                }
                for index, name in enumerate(names)
            ]
        }
    )


@pytest.mark.randomized(seed=12)
def test_snapshots_of_10000_job_runs_fit_a_configmap_and_the_status_keeps_its_room(rng: random.Random) -> None:
    # The 10,000-job shape of tests/unit/test_status_size.py: 100 expansions of a 100-job JobNet.
    wide = catalog_of(
        big={"jobs": [sub(f"part{i:03d}", "part") for i in range(100)]},
        part={"jobs": [job(f"step{i:03d}") for i in range(100)]},
    )
    wide_data = encode_snapshot(used_jobnets("big", wide))
    flat = flat_jobnet(10_000, rng)
    flat_data = encode_snapshot(flat)
    flat_json = len(
        json.dumps(
            {n: s.model_dump(by_alias=True, mode="json", exclude_defaults=True) for n, s in flat.items()},
            separators=(",", ":"),
        )
    )
    wide_size, flat_size = len(base64.b64decode(wide_data)), len(base64.b64decode(flat_data))
    print(
        f"snapshot of 100 x 100 jobs: {wide_size} bytes; of 10,000 random-named chained jobs: {flat_size} bytes "
        f"gzipped ({len(flat_data)} base64, from {flat_json} bytes of JSON)"
    )
    assert wide_size < 4096
    assert flat_size < SNAPSHOT_MAX_BYTES / 2

    # The status only names the snapshot: a 10,000-job status with it stays where it was.
    run_graph = expand("big", wide, run_id=UID)
    runtime = finished_runtime(run_graph, rng)
    _, patch = first_write(run_graph, runtime, rng)
    stored = merge({}, patch)
    status = snapshot_status("big-1-jobnets-" + UID, wide_data, {}, used_jobnets("big", wide))
    stored["jobNetSnapshot"] = status.model_dump(by_alias=True, mode="json")
    assert object_size(stored) < MiB
    assert len(json.dumps(stored["jobNetSnapshot"])) < 1024
    # Inline, the flat snapshot plus such a status would leave no room under 1 MiB.
    assert object_size(stored) + len(flat_data) > 0.9 * MiB, "the snapshot could live in the status after all"


def test_the_status_encoder_keeps_the_snapshot_reference() -> None:
    """The runtime's status writes are merge patches: a full write of a large run must not drop
    ``jobNetSnapshot`` (it is what a restarted operator resumes from)."""
    wide = catalog_of(
        big={"jobs": [sub(f"part{i:02d}", "part") for i in range(3)]},
        part={"jobs": [job(f"step{i:03d}") for i in range(100)]},
    )
    run_graph = expand("big", wide, run_id=UID)
    data = encode_snapshot(used_jobnets("big", wide))
    stored = {"phase": "Pending", "jobNetSnapshot": snapshot_status("c", data, {}, wide).model_dump(by_alias=True)}
    encoder = StatusEncoder(run_graph.nodes, stored)
    stored = merge(
        stored,
        encoder.encode(
            status_patch(decision_of(run_graph, finished_runtime(run_graph, random.Random(1))), full=True), full=True
        ),
    )
    assert stored["jobNetSnapshot"]["configMap"] == "c"
