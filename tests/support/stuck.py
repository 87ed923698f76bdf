"""A job made Stuck ``HeartbeatLost`` the way a network failure does: the link to its VM is cut
while it runs and stays down until the operator has marked it Stuck. Shared by the D02/D03
scenarios and the console's browser tests (K02, K03)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.support.scenario import Scenario

#: What runs while the link is still down: (the VM, the run's name, the job's path, its Stuck entry).
WhileCut = Callable[[Any, str, str, dict[str, Any]], None]

#: The file (in the VM user's home) :func:`cut_until_stuck` creates once the link is down.
CUT_MARK = "link-cut"


def after_the_cut(body: str) -> str:
    """A ``work_body`` that runs ``body`` only once the link is down (bounded: 60 s, then exit 1):
    the job outlives the cut whatever the load, where a fixed sleep could end before it."""
    return f"""\
n=0
while [ ! -e "$HOME/{CUT_MARK}" ] && [ $n -lt 600 ]; do sleep 0.1; n=$((n+1)); done
[ -e "$HOME/{CUT_MARK}" ] || exit 1
{body}"""


def cut_until_stuck(
    scenario: Scenario, jobnet: str, work_body: str, resolution: str, while_cut: WhileCut | None = None
) -> tuple[Any, str, str]:
    """Run ``jobnet``: ``work`` (marker script running ``work_body``) then ``next``, under
    ``stuckResolution: resolution``. Cut the VM's link while ``work`` runs (then create
    ``CUT_MARK``, see :func:`after_the_cut`), wait until it is Stuck HeartbeatLost, call
    ``while_cut`` (still cut), then restore the link. Returns the VM, the run's name and the
    path of ``work``."""
    vm = scenario.vm()
    work = scenario.marker_script(vm, "work", work_body)
    downstream = scenario.marker_script(vm, "next")
    run = scenario.run_jobnet(
        jobnet,
        scenario.host(vm),
        [{"name": "work", "script": work}, {"name": "next", "script": downstream, "after": ["work"]}],
        stuckResolution=resolution,
    )
    path = f"/{jobnet}/work"
    scenario.wait_job_state(run, path, "Running", timeout=60)
    vm.cut()
    vm.put_file(CUT_MARK, "", 0o644)  # on the VM's disk: no network involved
    try:
        stuck = scenario.wait_job_state(run, path, "Stuck", timeout=60)
        assert stuck["reason"] == "HeartbeatLost", stuck
        if while_cut is not None:
            while_cut(vm, run, path, stuck)
    finally:
        vm.restore()
    return vm, run, path
