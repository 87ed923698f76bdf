"""What the operator asks of kopf: event handlers only (so kopf keeps no diff base or handler
progress, jobnet.kube.nostorage), one handler per JobRun event, and no admission handlers
(the webhooks are served by jobnet.kube.webhook)."""

from __future__ import annotations

from jobnet.kube.app import OperatorConfig, build_registry
from jobnet.kube.client import JOBRUNS, KubeClient


def test_the_operator_registers_event_handlers_only_and_one_for_jobruns() -> None:
    registry, _ = build_registry(OperatorConfig(), KubeClient())
    assert registry._changing.get_all_handlers() == []  # create/update/resume would need kopf's storages
    assert registry._spawning.get_all_handlers() == []  # daemons and timers too
    assert registry._webhooks.get_all_handlers() == []
    watching = registry._watching.get_all_handlers()
    assert [h.id for h in watching if h.selector is not None and h.selector.any_name == JOBRUNS] == ["drive-jobruns"]
