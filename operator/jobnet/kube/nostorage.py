"""kopf storages that keep nothing: the operator registers no handler that uses kopf's diffs
or handler progress (JobNets, JobRuns, JobSchedules and JobCalendars are handled by event
handlers, which see every watch event as it comes). kopf's default storages would still build
a diff base at every watch event of every object (a deep copy of the whole object, minus its
status) and look for progress annotations in it; these build, read and write nothing.

Both are kopf's documented extension points (``settings.persistence.diffbase_storage`` and
``settings.persistence.progress_storage``, subclasses of ``kopf.DiffBaseStorage`` and
``kopf.ProgressStorage``). Should a ``@kopf.on.create``/``update``/``resume`` handler or a
daemon ever be added, it needs kopf's own storages back (a test checks that none exists).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import kopf


class NoDiffBaseStorage(kopf.DiffBaseStorage):
    """No diff base: nothing built, fetched or stored."""

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()  # nothing: kopf sees no change to react to, and copies nothing

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


class NoProgressStorage(kopf.ProgressStorage):
    """No handler progress: nothing fetched, stored or cleared."""

    def fetch(self, *, key: kopf.HandlerId, body: kopf.Body) -> kopf.ProgressRecord | None:
        return None

    def store(self, *, key: kopf.HandlerId, record: kopf.ProgressRecord, body: kopf.Body, patch: kopf.Patch) -> None:
        return None

    def purge(self, *, key: kopf.HandlerId, body: kopf.Body, patch: kopf.Patch) -> None:
        return None

    def touch(self, *, body: kopf.Body, patch: kopf.Patch, value: str | None) -> None:
        return None

    def clear(self, *, essence: kopf.BodyEssence) -> kopf.BodyEssence:
        return essence
