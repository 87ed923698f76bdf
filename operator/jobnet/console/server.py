"""The console's web server (aiohttp): pages rendered on the server, live updates by Server-Sent
Events fed from Kubernetes watches, and the three actions people take, each one API call made as
the viewer:

* start a run: create a JobRun with ``generateName`` (and the env given);
* change a job's state: the ``jobnet.dev/override`` (+ ``-message``) annotation;
* stop a job, a sub-jobnet or the run: the ``jobnet.dev/stop`` annotation.

The annotations are the ones ``kubectl jobnet override|stop`` sets, checked the same way before
they are sent, so the operator's mutating webhook stamps who steered and the API server's RBAC
and admission decide; a refusal is shown with the server's own message.

State-changing requests need the session's CSRF token (an HMAC of the session cookie, which is
``SameSite=Strict`` and ``HttpOnly``) in ``X-CSRF-Token``, and a same-origin ``Origin`` when the
browser sends one. Nothing secret goes into URLs or logs: the access log prints method, path and
status only.
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import collections
import contextlib
import gzip
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import aiohttp
import jinja2
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from jobnet.console import graphview, views
from jobnet.console.i18n import choose_language, translator
from jobnet.console.kubeapi import (
    ApiFailure,
    ApiTarget,
    KubeApi,
    events_path,
    jobnets_path,
    jobruns_path,
    jobschedules_path,
)
from jobnet.console.output import FOLLOW_POLL_SECONDS, OUTPUT_PAGE_BYTES, OutputReader, OutputRefused, OutputSource
from jobnet.core.annotations import (
    OVERRIDE_ANNOTATION,
    OVERRIDE_MESSAGE_ANNOTATION,
    REQUESTER_ANNOTATIONS,
    STOP_ANNOTATION,
    parse_override_annotation,
    parse_stop_annotation,
)
from jobnet.core.expansion import ExpansionError, RunGraph, expand
from jobnet.core.models import API_GROUP, API_VERSION, JobNetSpec
from jobnet.core.snapshot import SnapshotError, decode_snapshot
from jobnet.core.states import JobState
from jobnet.core.status import JobNetSnapshotStatus, JobRunStatus
from jobnet.core.validation import parse_jobnet
from jobnet.plugin.tree import elapsed, format_duration
from jobnet.plugin.view import jobnet_catalog

Body = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

log = logging.getLogger("jobnet.console")
HERE = Path(__file__).parent
SESSION_COOKIE = "jobnet_console_session"
#: How often a quiet event stream sends a comment (keeps proxies from closing it).
KEEPALIVE_SECONDS = 15.0
#: Each Kubernetes watch behind an event stream is re-opened after this long (the API's limit).
WATCH_SECONDS = 300
#: Attempts at an annotation patch when the run changed meanwhile (the operator writes it often).
PATCH_ATTEMPTS = 5
#: Run graphs and layouts kept (a run's graph never changes: it is expanded from its snapshot).
CACHED_GRAPHS = 32
CACHED_LAYOUTS = 64
#: The steering annotations a job monitor shows while the operator has not consumed them yet.
STEERING_ANNOTATIONS = (*REQUESTER_ANNOTATIONS, OVERRIDE_MESSAGE_ANNOTATION, *REQUESTER_ANNOTATIONS.values())


@dataclass
class ConsoleSettings:
    """How the console reaches the API and whom it acts as."""

    target: ApiTarget
    #: In-cluster mode: act with the viewer's forwarded bearer token only (never the console's own).
    forward_token: bool = False
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    #: NAME -> ADDRESS for reading output from a host named NAME (``--host-alias``).
    host_aliases: tuple[tuple[str, str], ...] = ()
    #: How long one stream of a running job's output follows it at most.
    follow_max_seconds: float = 3600.0


class _Lru(collections.OrderedDict[Any, Any]):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def remember(self, key: Any, value: Any) -> Any:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)
        return value


def csrf_token(secret: bytes, session: str) -> str:
    return hmac.new(secret, session.encode(), hashlib.sha256).hexdigest()


class Console:
    """The application: settings, the shared HTTP session to the API, and the caches."""

    def __init__(self, settings: ConsoleSettings) -> None:
        self.settings = settings
        self.session: aiohttp.ClientSession | None = None
        self.graphs = _Lru(CACHED_GRAPHS)
        self.layouts = _Lru(CACHED_LAYOUTS)
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self.templates.filters["icon"] = views.icon
        self.templates.filters["q"] = lambda text: quote(str(text), safe="/")

    # -------------------------------------------------------------- plumbing

    def api(self, request: web.Request) -> KubeApi:
        assert self.session is not None
        base = KubeApi(self.session, self.settings.target)
        if not self.settings.forward_token:
            return base
        authorization = request.headers.get("Authorization", "")
        if not authorization.startswith("Bearer ") or not authorization[7:].strip():
            raise web.HTTPUnauthorized(text="the console acts with your own token: sign in through the proxy")
        return base.as_viewer(authorization[7:].strip())

    def render(self, request: web.Request, template: str, **context: Any) -> web.Response:
        language = choose_language(request.headers.get("Accept-Language"))
        text = self.templates.get_template(template).render(
            t=translator(language),
            lang=language,
            csrf=csrf_token(self.settings.secret, request["session"]),
            default_namespace=self.settings.target.namespace,
            **context,
        )
        return web.Response(text=text, content_type="text/html")

    def namespace(self, request: web.Request) -> str:
        return request.query.get("namespace") or self.settings.target.namespace

    # -------------------------------------------------------------- reading

    async def run_graph(self, api: KubeApi, body: Body) -> tuple[RunGraph | None, str | None]:
        """The run's graph, expanded from its snapshot (cached: it never changes), else from the
        namespace's JobNets as they are now; or why it cannot be built."""
        metadata = body["metadata"]
        snapshot = (body.get("status") or {}).get("jobNetSnapshot")
        # Per viewer in the forwarded-token mode: a graph one viewer could read is not another's.
        key = (api.identity.cache_key(), metadata["namespace"], metadata.get("uid"))
        if snapshot is not None and key in self.graphs:
            return self.graphs[key]  # type: ignore[no-any-return]
        reference = (body.get("spec") or {}).get("jobNetRef", "")
        try:
            if snapshot is not None:
                catalog = await self._snapshot_catalog(api, metadata["namespace"], snapshot)
            else:
                catalog = await self.catalog(api, metadata["namespace"])
            result: tuple[RunGraph | None, str | None] = (
                expand(reference, catalog, run_id=metadata.get("uid", "")),
                None,
            )
        except (ExpansionError, SnapshotError, ValueError, ApiFailure) as error:
            # Shown, not fatal: the screens work from the status alone (e.g. for a person allowed
            # to read JobRuns but not the JobNets or the snapshot ConfigMap).
            return None, f"the run's graph cannot be built: {error}"
        if snapshot is not None:
            self.graphs.remember(key, result)
        return result

    async def _snapshot_catalog(self, api: KubeApi, namespace: str, stored: Any) -> dict[str, JobNetSpec]:
        snapshot = JobNetSnapshotStatus.model_validate(stored)
        config_map = await api.request("GET", f"/api/v1/namespaces/{namespace}/configmaps/{snapshot.config_map}")
        return decode_snapshot((config_map.get("binaryData") or {}).get(snapshot.key, ""), snapshot)

    async def catalog(self, api: KubeApi, namespace: str) -> dict[str, JobNetSpec]:
        listing = await api.request("GET", jobnets_path(namespace))
        return jobnet_catalog(listing.get("items", []))

    async def read_run(self, api: KubeApi, namespace: str, name: str) -> tuple[Body, JobRunStatus]:
        body = await api.request("GET", jobruns_path(namespace, name))
        try:
            return body, views.parse_status(body)
        except ValueError as error:
            raise ApiFailure(500, f"JobRun {name!r} has a status the console cannot read: {error}") from None

    # -------------------------------------------------------------- pages

    async def runs_page(self, request: web.Request) -> web.Response:
        api = self.api(request)
        namespace = self.namespace(request)
        every_namespace = namespace == "*"
        wanted = views.RunFilter(
            jobnet=request.query.get("jobnet", ""),
            phase=request.query.get("phase", ""),
            search=request.query.get("q", ""),
        )
        listing = await api.request("GET", jobruns_path(None if every_namespace else namespace))
        since = (listing.get("metadata") or {}).get("resourceVersion", "")
        rows = views.run_rows(listing.get("items", []), wanted, time.time())
        fragment = request.query.get("fragment") == "1"
        jobnets: list[str] = []
        jobnets_problem = ""
        if not fragment and not every_namespace:
            try:
                jobnets = views.startable_first((await api.request("GET", jobnets_path(namespace)))["items"])
            except ApiFailure as error:
                jobnets_problem = str(error)
        schedules: list[views.ScheduleRow] = []
        try:
            listing_schedules = await api.request("GET", jobschedules_path(None if every_namespace else namespace))
            schedules = views.schedule_rows(listing_schedules.get("items", []))
        except ApiFailure as error:
            if error.status not in (403, 404):  # no schedules installed, or not yours to read
                raise
        return self.render(
            request,
            "runs_rows.html" if fragment else "runs.html",
            rows=rows,
            namespace=namespace,
            wanted=wanted,
            phases=[str(phase) for phase in ("Stuck", "Running", "Pending", "Succeeded", "Failed", "Stopped")],
            jobnets=jobnets,
            jobnets_problem=jobnets_problem,
            schedules=schedules,
            since=since,
        )

    async def monitor_page(self, request: web.Request) -> web.Response:
        api = self.api(request)
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        body = await api.request("GET", jobruns_path(namespace, name))
        try:
            status, jobs = views.parse_status_lazily(body)
        except ValueError as error:
            raise ApiFailure(500, f"JobRun {name!r} has a status the console cannot read: {error}") from None
        graph, problem = await self.run_graph(api, body)
        drawing = None
        expanded: frozenset[str] = frozenset()
        if graph is not None:
            chosen = request.query.get("expand")
            if chosen is None:
                expanded = graphview.default_expanded(graph)
            else:
                expanded = frozenset(p for p in chosen.split(",") if p in graph.nodes)
            key = (api.identity.cache_key(), namespace, body["metadata"].get("uid"), expanded)
            drawing = self.layouts.get(key) or self.layouts.remember(
                key, graphview.layout(graph, graphview.visible_graph(graph, expanded))
            )
        now = time.time()
        rows = views.job_list_rows([node.path for node in graph.jobs()] if graph is not None else sorted(jobs), jobs)
        drawn = [node.path for node in drawing.nodes] + [frame.path for frame in drawing.frames] if drawing else []
        base = f"/runs/{quote(namespace, safe='')}/{quote(name, safe='')}"
        return self.render(
            request,
            "monitor_body.html" if request.query.get("fragment") == "1" else "monitor.html",
            run=views.run_row(body, now),
            expand_url=lambda paths: f"{base}?expand={quote(','.join(sorted(set(paths))), safe='/,')}",
            job_url=lambda path: f"{base}/job?path={quote(path, safe='/')}",
            can_stop=lambda state: views.stoppable(state, status.phase),
            since=body["metadata"].get("resourceVersion", ""),
            format_elapsed=lambda entry: format_duration(elapsed(entry.started_at, entry.finished_at, now)),
            status=status,
            graph=graph,
            graph_problem=problem,
            drawing=drawing,
            expanded=sorted(expanded),
            # Inside a <script> element: "<" escaped so no text can close it.
            jobs_json=json.dumps(rows, separators=(",", ":")).replace("<", "\\u003c"),
            job_count=len(rows),
            entries=views.job_entries(jobs, drawn),
            node_width=graphview.NODE_WIDTH,
            node_height=graphview.NODE_HEIGHT,
            stoppable=views.stoppable,
            jobs_under=_jobs_under_count(graph),
        )

    async def job_page(self, request: web.Request) -> web.Response:
        api = self.api(request)
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        path = request.query.get("path", "")
        body, status = await self.read_run(api, namespace, name)
        graph, problem = await self.run_graph(api, body)
        if graph is not None and path not in graph.nodes:
            raise ApiFailure(404, f"JobRun {name} has no job {path!r}")
        job = status.jobs.get(path)
        state = job.state if job is not None else "Pending"
        node = graph.nodes[path] if graph is not None else None
        environment: dict[str, str] = {}
        if graph is not None and node is not None and node.kind == "job":
            environment = views.environment_of(graph, path, body, (job.attempt if job and job.attempt else 1))
        annotations = body["metadata"].get("annotations") or {}
        return self.render(
            request,
            "job_body.html" if request.query.get("fragment") == "1" else "job.html",
            run=views.run_row(body, time.time()),
            since=body["metadata"].get("resourceVersion", ""),
            path=path,
            node=node,
            job=job,
            state=state,
            graph_problem=problem,
            choices=views.override_choices(state) if node is None or node.kind == "job" else [],
            can_stop=views.stoppable(state, status.phase),
            attempts=views.attempts(job),
            attempts_dropped=(job.earlier_attempts_dropped or 0) if job else 0,
            history=views.steering_history(path, graph, status.overrides),
            stop_scopes=[
                s
                for s in status.stop_scopes
                if path == s or path.startswith(s + "/") or s == (graph.root if graph else "")
            ],
            pending={k: annotations[k] for k in STEERING_ANNOTATIONS if k in annotations},
            environment=environment,
            page_bytes=OUTPUT_PAGE_BYTES,
        )

    async def events_page(self, request: web.Request) -> web.Response:
        api = self.api(request)
        namespace = self.namespace(request)
        wanted = views.EventFilter(
            type=request.query.get("type", ""),
            reason=request.query.get("reason", ""),
            run=request.query.get("run", ""),
            path=request.query.get("path", ""),
        )
        listing = await api.request("GET", events_path(None if namespace == "*" else namespace))
        rows = views.event_rows(listing.get("items", []), wanted)
        return self.render(
            request,
            "events_rows.html" if request.query.get("fragment") == "1" else "events.html",
            rows=rows,
            namespace=namespace,
            wanted=wanted,
            since=(listing.get("metadata") or {}).get("resourceVersion", ""),
            reasons=sorted({row.reason for row in views.event_rows(listing.get("items", []), views.EventFilter())}),
        )

    async def jobnet_page(self, request: web.Request) -> web.Response:
        api = self.api(request)
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        body = await api.request("GET", jobnets_path(namespace, name))
        problems: list[str] = []
        parsed = parse_jobnet(body.get("spec"))
        graph = None
        if not isinstance(parsed, JobNetSpec):
            problems = [str(problem) for problem in parsed]
        else:
            catalog = await self.catalog(api, namespace)
            catalog[name] = parsed
            try:
                graph = expand(name, catalog)
            except ExpansionError as error:
                problems = [str(problem) for problem in error.problems]
        drawing = None
        expanded: frozenset[str] = frozenset()
        if graph is not None:
            expanded = frozenset(p for p in request.query.get("expand", "").split(",") if p in graph.nodes)
            if "expand" not in request.query:
                expanded = graphview.default_expanded(graph)
            drawing = graphview.layout(graph, graphview.visible_graph(graph, expanded))
        base = f"/jobnets/{quote(namespace, safe='')}/{quote(name, safe='')}"
        return self.render(
            request,
            "jobnet.html",
            name=name,
            namespace=namespace,
            graph=graph,
            problems=problems,
            drawing=drawing,
            expanded=sorted(expanded),
            expand_url=lambda paths: f"{base}?expand={quote(','.join(sorted(set(paths))), safe='/,')}",
            job_url=lambda path: "#",
            can_stop=lambda state: False,
            node_width=graphview.NODE_WIDTH,
            node_height=graphview.NODE_HEIGHT,
            jobs_under=_jobs_under_count(graph),
            job_count=len(graph.jobs()) if graph is not None else 0,
        )

    async def _output_source(self, request: web.Request) -> OutputSource:
        """Where the job's full output is (its current attempt's key and host) and the credentials
        Secret of that host, read as the viewer (like ``kubectl jobnet logs``); ``OutputRefused``
        with the reason otherwise."""
        from jobnet.plugin.logs import LogsOptions, locate, serve_args_from_environment
        from jobnet.plugin.view import JobRunView, PluginError

        api = self.api(request)
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        requested = request.query.get("stream", "stdout")
        if requested not in ("stdout", "stderr"):
            raise OutputRefused("stream must be stdout or stderr", 400)
        stream: Literal["stdout", "stderr"] = "stderr" if requested == "stderr" else "stdout"
        body, status = await self.read_run(api, namespace, name)
        graph, problem = await self.run_graph(api, body)
        options = LogsOptions(
            path=request.query.get("path", ""),
            stream=stream,
            serve_args=serve_args_from_environment(),
            host_aliases=self.settings.host_aliases,
        )
        try:
            location = locate(JobRunView(body=body, status=status, graph=graph, graph_problem=problem), options.path)
        except PluginError as error:
            raise OutputRefused(str(error)) from None
        secret_name = location.host.credentials_secret
        secret = await api.request("GET", f"/api/v1/namespaces/{namespace}/secrets/{secret_name}")
        try:
            data = {key: base64.b64decode(value).decode() for key, value in (secret.get("data") or {}).items()}
        except (ValueError, UnicodeDecodeError):
            raise OutputRefused(f"Secret {secret_name!r} has data that is not base64-encoded UTF-8 text") from None
        return OutputSource(location=location, secret=data, options=options)

    async def output(self, request: web.Request) -> web.Response:
        """One page of a job's full output: at most ``length`` (default and at most ``READ_CHUNK``)
        stored bytes from ``offset``, read from the agent on its VM (the job monitor's "earlier
        output")."""
        offset, length = request.query.get("offset", "0"), request.query.get("length", "")
        if not offset.isdigit() or not (length.isdigit() or length == ""):
            return _refused("offset and length must be numbers of bytes", 400)
        try:
            source = await self._output_source(request)
            page, eof = await source.call(lambda reader: reader.read_page(int(offset), int(length or 0) or None))
        except OutputRefused as refusal:
            return _refused(refusal.message, refusal.status)
        except ApiFailure as error:  # e.g. the viewer may not read the host's credentials Secret
            return _refused(str(error), error.status if 400 <= error.status < 600 else 502)
        return web.json_response(
            {"text": page.decode(errors="replace"), "nextOffset": int(offset) + len(page), "eof": eof and not page}
        )

    async def output_stream(self, request: web.Request) -> web.StreamResponse:
        """Server-Sent Events of a job's full output: ``page`` (the last ``OUTPUT_PAGE_BYTES`` kept,
        from a line start, with its byte range), then ``more`` as the running job writes, and
        ``end`` once it ended and all was sent; ``problem`` when the output cannot be read. One
        agent channel to the VM for the whole stream; it follows for at most
        ``settings.follow_max_seconds``."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)

        async def send(event: str, data: Body) -> None:
            if event == "problem":  # the access line says 200 whatever happened: this says what did
                log.warning("output stream %s?%s: %s", request.path, request.query_string, data["message"])
            await response.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())

        with contextlib.suppress(ConnectionResetError, aiohttp.ClientConnectionResetError):
            try:
                source = await self._output_source(request)
                reader = await source.opened()
            except (OutputRefused, ApiFailure) as refusal:
                await send("problem", {"message": str(refusal)})
                return response
            try:
                await self._follow(reader, send)
            except OutputRefused as refusal:
                await send("problem", {"message": refusal.message})
            finally:
                await asyncio.to_thread(reader.close)
        return response

    async def _follow(self, reader: OutputReader, send: Callable[[str, Body], Awaitable[None]]) -> None:
        start, text, end = await reader.run(reader.last_page)
        await send("page", {"text": text, "start": start, "end": end})
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        deadline = time.monotonic() + self.settings.follow_max_seconds
        while time.monotonic() < deadline:
            data, eof = await reader.run(reader.read_page, end, None)
            end += len(data)
            if data:
                await send("more", {"text": decoder.decode(data), "end": end})
                continue
            if eof:
                await send("end", {"end": end})
                return
            await asyncio.sleep(FOLLOW_POLL_SECONDS)
        await send(
            "problem", {"message": f"stopped following after {self.settings.follow_max_seconds:g}s: reload to go on"}
        )

    # -------------------------------------------------------------- live updates

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """Server-Sent Events: one ``change`` per watched JobRun/Event change (``what`` = jobruns,
        events) in the namespace (``*``: all); the page re-renders what it shows."""
        api = self.api(request)
        namespace = self.namespace(request)
        scope = None if namespace == "*" else namespace
        paths = {"jobruns": jobruns_path(scope), "events": events_path(scope)}
        wanted = [what for what in request.query.get("what", "jobruns").split(",") if what in paths]
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize=1000)
        # Watched from the resourceVersion the page was rendered at: no change in between is missed.
        given = request.query.get("since", "")
        since = given if given.isdigit() else None
        pumps = [asyncio.create_task(_pump(api, what, paths[what], queue, since)) for what in wanted]
        try:
            await response.write(b"event: ready\ndata: {}\n\n")
            while True:
                try:
                    line = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    line = ": keepalive"
                await response.write(line.encode() + b"\n\n")
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            pass  # the page went away (a write to it failed)
        finally:
            # Also when the handler is cancelled because the page went away (handler_cancellation).
            for pump in pumps:
                pump.cancel()
        return response

    # -------------------------------------------------------------- actions

    async def start_run(self, request: web.Request) -> web.Response:
        api = self.api(request)
        namespace = request.match_info["namespace"]
        form = await _json(request)
        jobnet = str(form.get("jobnet") or "").strip()
        if not jobnet:
            return _refused("choose the JobNet to run")
        env, problems = views.parse_env_lines(str(form.get("env") or ""))
        if problems:
            return _refused("; ".join(problems))
        manifest: Body = {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": "JobRun",
            "metadata": {"generateName": f"{jobnet}-", "namespace": namespace},
            "spec": {"jobNetRef": jobnet, **({"env": env} if env else {})},
        }
        created = await api.request("POST", jobruns_path(namespace), body=manifest)
        name = created["metadata"]["name"]
        log.info("created JobRun %s/%s of JobNet %s", namespace, name, jobnet)
        return web.json_response({"name": name, "message": f"started {name}"})

    async def override(self, request: web.Request) -> web.Response:
        form = await _json(request)
        path, state = str(form.get("path") or ""), str(form.get("state") or "")
        message = str(form.get("message") or "").strip()

        def change(body: Body, status: JobRunStatus, graph: RunGraph | None) -> dict[str, str]:
            pending = (body["metadata"].get("annotations") or {}).get(OVERRIDE_ANNOTATION)
            value = _joined(pending, f"{path}={state}")
            if graph is not None:
                states = {
                    node.path: JobState(status.jobs[node.path].state) if node.path in status.jobs else JobState.PENDING
                    for node in graph.jobs()
                }
                parsed = parse_override_annotation(value, graph, states, status.stop_scopes)
                if parsed.errors:
                    raise ApiFailure(422, "override refused: " + "; ".join(parsed.errors))
                value = ",".join(f"{r.path}={r.state}" for r in parsed.requests)
            annotations = {OVERRIDE_ANNOTATION: value}
            if message:
                annotations[OVERRIDE_MESSAGE_ANNOTATION] = message
            return annotations

        await self._annotate(request, change)
        return web.json_response({"message": f"override {path}={state} requested; the operator applies it"})

    async def stop(self, request: web.Request) -> web.Response:
        form = await _json(request)
        path = str(form.get("path") or "/")

        def change(body: Body, status: JobRunStatus, graph: RunGraph | None) -> dict[str, str]:
            if status.phase in views.FINISHED_PHASES:
                raise ApiFailure(409, f"the run already ended ({status.phase}): nothing to stop")
            pending = (body["metadata"].get("annotations") or {}).get(STOP_ANNOTATION)
            value = _joined(pending, path)
            if graph is not None:
                parsed = parse_stop_annotation(value, graph)
                if parsed.errors:
                    raise ApiFailure(422, "stop refused: " + "; ".join(parsed.errors))
                value = ",".join(r.path for r in parsed.requests)
            return {STOP_ANNOTATION: value}

        await self._annotate(request, change)
        return web.json_response({"message": f"stop of {path} requested"})

    async def _annotate(
        self, request: web.Request, change: Callable[[Body, JobRunStatus, RunGraph | None], dict[str, str]]
    ) -> None:
        """Read the run, compute the annotations (checked against the run's graph when it can be
        built; otherwise the admission webhook and the operator judge them), patch them only if
        the run did not change meanwhile (resourceVersion precondition), again from a fresh read
        on a conflict."""
        api = self.api(request)
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        for attempt in range(1, PATCH_ATTEMPTS + 1):
            body, status = await self.read_run(api, namespace, name)
            graph, _ = await self.run_graph(api, body)
            annotations = change(body, status, graph)
            patch = {"metadata": {"annotations": annotations, "resourceVersion": body["metadata"]["resourceVersion"]}}
            try:
                await api.request(
                    "PATCH", jobruns_path(namespace, name), body=patch, content_type="application/merge-patch+json"
                )
            except ApiFailure as error:
                if error.status == 409 and attempt < PATCH_ATTEMPTS:
                    continue
                raise
            log.info("annotated JobRun %s/%s: %s", namespace, name, ", ".join(sorted(annotations)))
            return


def _joined(pending: str | None, addition: str) -> str:
    """A steering annotation the operator has not consumed yet keeps its requests: add to it."""
    return f"{pending},{addition}" if pending and pending.strip() else addition


def _jobs_under_count(graph: RunGraph | None) -> dict[str, int]:
    """Jobs under each jobnet node (for a collapsed box's caption), in one pass from the leaves."""
    if graph is None:
        return {}
    counts: dict[str, int] = {}
    for node in reversed(list(graph.nodes.values())):
        counts[node.path] = 1 if node.kind == "job" else sum(counts.get(c, 0) for c in node.children)
    return counts


async def _pump(api: KubeApi, what: str, path: str, queue: asyncio.Queue[str], since: str | None) -> None:
    """Feed ``queue`` with SSE lines for every change of the collection at ``path``, watched from
    ``since`` (else from a fresh list's resourceVersion) and on from the last change seen. When
    the watch expired (410) or failed it lists again, and the page is told to refresh once (it
    may have missed a change)."""

    def send(event: str, data: Body) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            queue.put_nowait(f"event: {event}\ndata: {json.dumps(data)}")

    backoff = 0.5
    version, relisting = since, False
    while True:
        try:
            if version is None:
                listing = await api.request("GET", path, query={"limit": "1"})
                version = str((listing.get("metadata") or {}).get("resourceVersion") or "0")
                if relisting:
                    send("change", {"what": what, "type": "RELISTED"})
            expired = False
            async for event in api.watch(path, version, WATCH_SECONDS):
                if event.get("type") == "ERROR":
                    expired = True
                    break
                body = event.get("object") or {}
                metadata = body.get("metadata") or {}
                send(
                    "change",
                    {
                        "what": what,
                        "type": event.get("type"),
                        "namespace": metadata.get("namespace"),
                        "name": metadata.get("name"),
                        "run": (body.get("involvedObject") or {}).get("name"),
                    },
                )
                version = str(metadata.get("resourceVersion") or version)
            if expired:
                version, relisting = None, True
            backoff = 0.5
        except ApiFailure as error:
            version, relisting = None, True
            send("problem", {"what": what, "message": str(error)})
            if error.status in (401, 403):
                return  # not allowed to watch: the page still works by reloading
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)


async def _json(request: web.Request) -> Body:
    try:
        form = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="expected a JSON body") from None
    if not isinstance(form, dict):
        raise web.HTTPBadRequest(text="expected a JSON object")
    return form


def _refused(message: str, status: int = 422) -> web.Response:
    return web.json_response({"error": message}, status=status)


# ------------------------------------------------------------------ middlewares and app


@web.middleware
async def _session(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give every browser a random session cookie; check the CSRF token on state changes."""
    console: Console = request.app["console"]
    session = request.cookies.get(SESSION_COOKIE, "")
    fresh = len(session) < 32
    if fresh:
        session = secrets.token_urlsafe(32)
    request["session"] = session
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            return _refused("cross-site request refused", 403)
        given = request.headers.get("X-CSRF-Token", "")
        if fresh or not hmac.compare_digest(given, csrf_token(console.settings.secret, session)):
            return _refused("missing or wrong CSRF token: reload the page", 403)
    response = await handler(request)
    if fresh and not response.prepared:
        response.set_cookie(SESSION_COOKIE, session, httponly=True, samesite="Strict", path="/")
    return response


@web.middleware
async def _failures(request: web.Request, handler: Handler) -> web.StreamResponse:
    """An API refusal is shown with the server's own message: JSON for actions, a page otherwise."""
    try:
        return await handler(request)
    except ApiFailure as error:
        if request.method != "GET":
            return _refused(str(error), error.status if 400 <= error.status < 600 else 502)
        console: Console = request.app["console"]
        page = console.render(request, "problem.html", problem=str(error))
        page.set_status(error.status if 400 <= error.status < 600 else 502)
        return page


async def _static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in ("console.js", "console.css"):
        raise web.HTTPNotFound()
    data = (HERE / "static" / name).read_bytes()
    kind = "text/javascript" if name.endswith(".js") else "text/css"
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        return web.Response(body=gzip.compress(data), content_type=kind, headers={"Content-Encoding": "gzip"})
    return web.Response(body=data, content_type=kind)


def build_app(settings: ConsoleSettings) -> web.Application:
    console = Console(settings)
    app = web.Application(middlewares=[_failures, _session])
    app["console"] = console

    async def session_context(app: web.Application) -> AsyncIterator[None]:
        console.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=None)
        )
        yield
        await console.session.close()

    app.cleanup_ctx.append(session_context)
    routes = [
        web.get("/", lambda request: _redirect("/runs")),
        web.get("/runs", console.runs_page),
        web.get("/runs/{namespace}/{name}", console.monitor_page),
        web.get("/runs/{namespace}/{name}/job", console.job_page),
        web.get("/runs/{namespace}/{name}/output", console.output),
        web.get("/runs/{namespace}/{name}/output/stream", console.output_stream),
        web.get("/events", console.events_page),
        web.get("/jobnets/{namespace}/{name}", console.jobnet_page),
        web.get("/api/stream", console.stream),
        web.post("/api/runs/{namespace}", console.start_run),
        web.post("/api/runs/{namespace}/{name}/override", console.override),
        web.post("/api/runs/{namespace}/{name}/stop", console.stop),
        web.get("/static/{name}", _static),
    ]
    app.add_routes(routes)
    return app


async def _redirect(location: str) -> web.Response:
    raise web.HTTPFound(location)


class PathOnlyAccessLogger(AbstractAccessLogger):
    """Access log lines without query strings or headers (nothing secret reaches the log)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info("%s %s %s %.3fs", request.method, request.path, response.status, time)
