"""The chaos test's JobNets: mixed shapes (chains, fan-outs, joins, a sub-jobnet expansion, a
``finally`` job) drawn from a seeded random source, each job pinned to one of several VMs, and
what each job must wait for (pure: no I/O, unit-tested in tests/chaos/test_invariants.py).

Every job runs the same ledger script (:data:`LEDGER_SCRIPT`) with two arguments: how long it
sleeps and the exit code it ends with."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: The script every job runs: a "start" line before its work and an "end" line after, each
#: appended to the VM's ledger and fsync'd (``sync FILE``). Arguments: seconds to sleep, exit code.
LEDGER_SCRIPT = """\
#!/bin/sh
ledger={ledger}
echo "start $JOBNET_RUN $JOBNET_JOB_PATH $JOBNET_ATTEMPT $(date +%s.%N) $$" >> "$ledger"
sync "$ledger"
sleep "$1"
echo "end $JOBNET_RUN $JOBNET_JOB_PATH $JOBNET_ATTEMPT $(date +%s.%N) $2" >> "$ledger"
sync "$ledger"
exit "$2"
"""
#: Seconds a job sleeps, drawn from these.
DURATIONS = (0.05, 0.2, 0.5, 1.0, 2.0)
#: The chance that a job exits non-zero (its downstream is then Skipped, the run Failed).
FAILING = 0.06
FAILING_CODE = 3


@dataclass(frozen=True)
class JobDef:
    name: str
    after: tuple[str, ...] = ()
    expand: str | None = None
    host: int = 0
    """Index of the VM the job runs on."""
    sleep: float = 0.05
    code: int = 0


@dataclass(frozen=True)
class NetDef:
    name: str
    jobs: tuple[JobDef, ...]
    finally_: tuple[JobDef, ...] = ()


@dataclass(frozen=True)
class Requirement:
    """What a leaf job must wait for before it starts."""

    succeeded: frozenset[str] = frozenset()
    """Leaf paths that must have ended with exit code 0 (its ``after`` jobs and sub-jobnets)."""
    ended: frozenset[str] = frozenset()
    """Leaf paths that must have ended if they started (a ``finally`` job: the JobNet's jobs)."""


@dataclass
class Catalogue:
    """The JobNets of one chaos test: roots (runs are made of them) and the expanded leaf nets."""

    nets: dict[str, NetDef] = field(default_factory=dict)
    roots: list[str] = field(default_factory=list)


def _job(rng: random.Random, name: str, hosts: int, after: Sequence[str] = ()) -> JobDef:
    code = FAILING_CODE if rng.random() < FAILING else 0
    return JobDef(name, tuple(after), host=rng.randrange(hosts), sleep=rng.choice(DURATIONS), code=code)


def draw_catalogue(rng: random.Random, hosts: int, variants: int = 2) -> Catalogue:
    """``variants`` JobNets of each shape: chain, fan-out + join, two roots joined, and one that
    expands a sub-jobnet (itself a chain) between two jobs and has a ``finally`` job."""
    catalogue = Catalogue()
    for v in range(variants):
        leaf = f"leaf{v}"
        catalogue.nets[leaf] = NetDef(leaf, (_job(rng, "l1", hosts), _job(rng, "l2", hosts, ["l1"])))
        length = rng.randint(3, 4)
        chain = [_job(rng, "c0", hosts)] + [_job(rng, f"c{i}", hosts, [f"c{i - 1}"]) for i in range(1, length)]
        width = rng.randint(3, 5)
        fan = [_job(rng, "src", hosts)] + [_job(rng, f"f{i}", hosts, ["src"]) for i in range(width)]
        fan.append(_job(rng, "join", hosts, [f"f{i}" for i in range(width)]))
        join = [_job(rng, "a", hosts), _job(rng, "b", hosts), _job(rng, "both", hosts, ["a", "b"])]
        nested = [
            _job(rng, "x", hosts),
            JobDef("sub", ("x",), expand=leaf),
            _job(rng, "tail", hosts, ["sub"]),
        ]
        for shape, jobs, finally_ in (
            ("chain", chain, ()),
            ("fan", fan, ()),
            ("join", join, ()),
            ("nested", nested, (_job(rng, "notify", hosts),)),
        ):
            name = f"{shape}{v}"
            catalogue.nets[name] = NetDef(name, tuple(jobs), tuple(finally_))
            catalogue.roots.append(name)
    return catalogue


def leaves(nets: Mapping[str, NetDef], net: str, prefix: str) -> list[str]:
    """The leaf job paths of JobNet ``net`` embedded at ``prefix`` (its jobs and finally jobs)."""
    found: list[str] = []
    definition = nets[net]
    for job in (*definition.jobs, *definition.finally_):
        path = f"{prefix}/{job.name}"
        found += leaves(nets, job.expand, path) if job.expand else [path]
    return found


def requirements(nets: Mapping[str, NetDef], root: str) -> dict[str, Requirement]:
    """Leaf path -> what it must wait for, for a run of root JobNet ``root``."""
    found: dict[str, Requirement] = {}

    def walk(net: str, prefix: str, inherited: frozenset[str]) -> None:
        definition = nets[net]
        by_name = {job.name: job for job in (*definition.jobs, *definition.finally_)}

        def under(name: str) -> list[str]:
            job = by_name[name]
            path = f"{prefix}/{name}"
            return leaves(nets, job.expand, path) if job.expand else [path]

        normal = frozenset(path for job in definition.jobs for path in under(job.name))
        for is_finally, jobs in ((False, definition.jobs), (True, definition.finally_)):
            for job in jobs:
                succeeded = inherited | frozenset(path for name in job.after for path in under(name))
                path = f"{prefix}/{job.name}"
                if job.expand:
                    walk(job.expand, path, succeeded)
                else:
                    found[path] = Requirement(succeeded, normal if is_finally else frozenset())

    walk(root, f"/{root}", frozenset())
    return found


def manifests(
    nets: Mapping[str, NetDef], hosts: Sequence[Mapping[str, Any]], scripts: Sequence[str]
) -> list[dict[str, Any]]:
    """The JobNet manifests; ``hosts[i]`` is the ``host:`` block of VM i, ``scripts[i]`` the path
    of the ledger script on it. Deliveries are retried for a while, so that a VM
    that reboots or a link that blips does not fail every job due then."""

    def job(definition: JobDef) -> dict[str, Any]:
        if definition.expand:
            return {"name": definition.name, "expand": definition.expand, "after": list(definition.after)}
        return {
            "name": definition.name,
            "script": scripts[definition.host],
            "args": [str(definition.sleep), str(definition.code)],
            "after": list(definition.after),
            "host": dict(hosts[definition.host]),
        }

    return [
        {
            "apiVersion": "jobnet.dev/v1alpha1",
            "kind": "JobNet",
            "metadata": {"name": net.name},
            "spec": {
                "host": dict(hosts[0]),
                "retry": {"dispatchAttempts": 8, "intervalSeconds": 1},
                "jobs": [job(j) for j in net.jobs],
                **({"finally": [job(j) for j in net.finally_]} if net.finally_ else {}),
            },
        }
        for net in nets.values()
    ]
