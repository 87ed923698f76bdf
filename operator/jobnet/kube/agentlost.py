"""AgentLost: after every new channel to a VM's agent, each run that believes the agent accepted
some of its jobs asks the agent for its records (``list``, one request per run); a key the agent
does not know any more (its state directory was wiped, the VM reinstalled) is reported to the
run's inbox as absent, and the scheduler makes the job Stuck ``AgentLost``
(:func:`jobnet.core.scheduler.liveness.apply_record`).

The keys asked about are those of jobs the agent had confirmed (Running, Stuck for a lost
heartbeat, Stopping once the agent reported it running or answered its kill:
:func:`~jobnet.core.scheduler.liveness.agent_may_have_lost`) before the request left: the agent
journals a key before it answers for it, so an agent that still has its state always lists them.
A job stopped while its launch was unconfirmed is not asked about: its launch may never have
arrived, and the kill's answer (fenced: never started) settles it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from jobnet.core.agentproto import JobKey, ListRequest, ListResult
from jobnet.core.scheduler.liveness import agent_may_have_lost
from jobnet.ssh import HostAgent, SshError

if TYPE_CHECKING:
    from jobnet.kube.runtime import HostLink, RunLoop

logger = logging.getLogger("jobnet.runtime")


def keys_confirmed_on(loop: RunLoop, link: HostLink) -> list[JobKey]:
    """The keys of ``loop``'s jobs on ``link``'s host that the agent had confirmed."""
    keys = []
    for path, job in loop.state.jobs.items():
        node = loop.graph.nodes.get(path)
        if node is None or node.host is None or job.attempt == 0 or not agent_may_have_lost(job):
            continue
        if loop.link_key(node.host) == link.key:
            keys.append(JobKey(run=loop.uid, path=path, attempt=job.attempt))
    return keys


async def report_lost_keys(link: HostLink, agent: HostAgent) -> None:
    """Ask the agent on a new channel which confirmed keys of each run it still knows."""
    for loop in list(link.subscribers.values()):
        expected = keys_confirmed_on(loop, link)
        if not expected:
            continue
        try:
            listed = await agent.request(ListRequest(run=loop.uid), ListResult)
        except SshError as e:
            logger.debug("host=%s cannot list the records of run %s: %s", link.key.host_id, loop.label, e.message)
            return  # the next channel asks again
        known = {record.key.text() for record in listed.records}
        lost = [key for key in expected if key.text() not in known]
        if lost:
            logger.warning(
                "host=%s the agent has no record of %s (its state was lost?)",
                link.key.host_id,
                ", ".join(key.text() for key in lost),
            )
            loop.on_absent(lost)
