"""The web dashboard's ASGI app (Starlette), built from a sync ``QueueManager``; ``pyqcore web``
serves it with uvicorn.

Why the sync API, with each request's Redis calls run in Starlette's threadpool, rather than
``pyqcore.asyncio`` on a ``redis.asyncio`` client: the CLI already builds a sync manager from
``--url``/``--cluster`` (one way to connect, one set of errors), the caller's own manager (an
application embedding the app) is most often the sync one, and a dashboard serves a few
requests a second, for which a thread each costs nothing. Every blocking call is made through
``run_in_threadpool``; the event loop never waits on Redis.

Routes:

==========================  ================================================================
``GET /``                   queues: counts and counters of every known queue, the rate chart
``GET /partials/queues``    the part of that page that refreshes itself (polled by its JS)
``GET /api/queues``         the same as JSON (counts, counters, the sampled rates)
``GET /workers``            the running workers (``manager.workers()``)
``GET /dlq``                dead jobs; ``?queue=`` and ``?q=`` (error text) search them,
                            ``?offset=`` pages
``GET /dlq/{queue}/{id}``   one dead job: payload, context, error and traceback, attempts
``POST /dlq/requeue``       requeue ``job`` ("queue id", repeatable) or ``queue`` + ``all=1``;
``POST /dlq/purge``         without ``confirm=yes`` it only shows what would happen (the
                            confirmation step); with ``--token`` the confirmed form must
                            carry it; refused (403) on a ``--read-only`` dashboard
``GET /healthz``            "ok" (no Redis call)
==========================  ================================================================

The rate chart comes from the server: a task samples every queue's ``completed`` counter every
``sample_interval`` seconds and keeps ``window`` seconds of samples. Write actions are refused
from another site (``Origin``/``Sec-Fetch-Site``), so a page elsewhere cannot post the forms;
pages carry a Content-Security-Policy that runs only the dashboard's own scripts.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import redis
from redis.exceptions import RedisClusterException
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Route

from pyqcore.errors import PyqcoreError, UnknownQueueError
from pyqcore.sync.manager import QueueManager
from pyqcore.web import pages
from pyqcore.web.dashboard import Dashboard
from pyqcore.web.pages import Html

MAX_FORM_BYTES = 1 << 20  # a bigger POST body is refused


def _script_hashes() -> str:
    found = {pages.SELECT_ALL_JS, pages.REFRESH_JS, ""}
    return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'"
                    for s in sorted(found))


HEADERS = {
    "Content-Security-Policy": f"default-src 'self'; script-src {_script_hashes()}; "
                               "style-src 'unsafe-inline'; img-src 'self' data:; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def one_line(text: str) -> str:
    return re.sub(r"\s*\n\s*", " ", text.strip()) or "unknown error"


class HttpError(Exception):
    """An error page: ``status``, a title and a one-line message."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status, self.title, self.message = status, title, message


class Web:
    """The endpoints, over one ``Dashboard``."""

    def __init__(self, dashboard: Dashboard, *, read_only: bool, token: str | None,
                 refresh: float, sample_interval: float) -> None:
        self.dashboard = dashboard
        self.read_only = read_only
        self.token = token
        self.refresh = refresh
        self.sample_interval = sample_interval
        self.sample_error: str | None = None

    @property
    def prefix(self) -> str:
        return self.dashboard.prefix

    def html(self, body: Html, status: int = 200) -> HTMLResponse:
        return HTMLResponse(str(body), status_code=status, headers=HEADERS)

    def error_page(self, status: int, title: str, message: str) -> HTMLResponse:
        return self.html(pages.message_page(title, one_line(message), prefix=self.prefix,
                                            read_only=self.read_only), status)

    # -- the rate sampler ---------------------------------------------------------------------

    async def sampler(self) -> None:
        """Sample the completed counters every ``sample_interval`` seconds, forever; a failed
        sample is reported on the queues page and retried at the next tick."""
        while True:
            try:
                await run_in_threadpool(self.dashboard.sample)
                self.sample_error = None
            except Exception as exc:
                self.sample_error = f"sampling the counters failed: {type(exc).__name__}: {exc}"
            await asyncio.sleep(self.sample_interval)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(self.sampler())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- queues and workers --------------------------------------------------------------------

    async def queues(self, request: Request) -> Response:
        rows = await run_in_threadpool(self.dashboard.queues)
        return self.html(pages.queues_page(
            rows, self.dashboard.series(), window=self.dashboard.rates.window,
            refresh=self.refresh, prefix=self.prefix, read_only=self.read_only,
            error=self.sample_error))

    async def queues_partial(self, request: Request) -> Response:
        rows = await run_in_threadpool(self.dashboard.queues)
        return self.html(pages.queues_live(rows, self.dashboard.series(),
                                           window=self.dashboard.rates.window,
                                           error=self.sample_error))

    async def queues_json(self, request: Request) -> Response:
        rows = await run_in_threadpool(self.dashboard.queues)
        series = self.dashboard.series()
        return JSONResponse({
            "prefix": self.prefix,
            "window_seconds": self.dashboard.rates.window,
            "queues": [{"name": r.name, "partitions": r.partitions, "counts": r.counts,
                        "stats": r.stats,
                        "completed_per_second": series[r.name][-1][1]
                        if series.get(r.name) else None,
                        "completed_per_second_series": [[round(ago, 3), rate] for ago, rate
                                                        in series.get(r.name, [])]}
                       for r in rows],
        }, headers={"Cache-Control": "no-store"})

    async def workers(self, request: Request) -> Response:
        found, now = await run_in_threadpool(self.dashboard.workers)
        return self.html(pages.workers_page(found, now=now, prefix=self.prefix,
                                            read_only=self.read_only))

    async def healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok")

    # -- dead letters ---------------------------------------------------------------------------

    async def dlq(self, request: Request) -> Response:
        params = request.query_params
        queue = params.get("queue") or None
        search = params.get("q", "").strip()
        try:
            offset = int(params.get("offset", "0"))
        except ValueError:
            offset = -1
        if offset < 0:
            raise HttpError(400, "Bad request", "offset must be an integer >= 0")

        def read() -> tuple[Any, list[str], int | None]:
            known = self.dashboard.known()
            if queue is not None and queue not in known:
                raise UnknownQueueError(f"unknown queue {queue!r} under prefix "
                                        f"{self.prefix!r}")
            page = self.dashboard.dead_page(queue, search, offset)
            dead = None if queue is None else self.dashboard.dead_count(queue)
            return page, known, dead

        page, known, dead = await run_in_threadpool(read)
        return self.html(pages.dlq_page(page, queues=known, queue=queue, queue_dead=dead,
                                        done=params.get("done", ""), prefix=self.prefix,
                                        read_only=self.read_only))

    async def dead_job(self, request: Request) -> Response:
        queue, job_id = request.path_params["queue"], request.path_params["job_id"]

        def read() -> Any:
            self.dashboard.check_queue(queue)
            return self.dashboard.dead_item(queue, job_id)

        item = await run_in_threadpool(read)
        if item is None:
            raise HttpError(404, "Not dead", f"job {job_id!r} of queue {queue!r} is not in the "
                            "dead-letter queue (requeued, purged, or never dead)")
        return self.html(pages.job_page(item, prefix=self.prefix, read_only=self.read_only))

    async def requeue(self, request: Request) -> Response:
        return await self.write(request, "requeue")

    async def purge(self, request: Request) -> Response:
        return await self.write(request, "purge")

    async def write(self, request: Request, action: str) -> Response:
        """A requeue or a purge: refused when read-only or cross-site; the confirmation page
        unless confirmed; done (then back to the dead letters) when confirmed with the token."""
        if self.read_only:
            raise HttpError(403, "Read-only", "this dashboard is read-only: it requeues and "
                            "purges nothing (started with --read-only)")
        check_same_origin(request)
        form = await read_form(request)
        selection = selected(form)
        if any(ids is None for ids in selection.values()):  # all=1: one queue, every job
            fields = [("queue", next(iter(selection))), ("all", "1")]
        else:
            fields = [("job", f"{q} {i}") for q, ids in selection.items() for i in ids or []]

        def check() -> dict[str, int]:
            known = self.dashboard.known()
            for name in selection:
                if name not in known:
                    raise UnknownQueueError(f"unknown queue {name!r} under prefix "
                                            f"{self.prefix!r}")
            return {q: self.dashboard.dead_count(q) if ids is None else len(ids)
                    for q, ids in selection.items()}

        sizes = await run_in_threadpool(check)
        confirmed = form.get("confirm", [""])[0] == "yes"
        token_ok = self.token is None or hmac.compare_digest(
            form.get("token", [""])[0].encode(), self.token.encode())
        if not confirmed or not token_ok:
            status = 200 if not confirmed else 403
            return self.html(pages.confirm_page(
                action, describe_selection(selection, sizes), fields,
                ids=[i for ids in selection.values() for i in ids or []],
                need_token=self.token is not None, back=back_to(selection),
                prefix=self.prefix, read_only=self.read_only,
                error="" if token_ok else "wrong token: nothing was done"), status)
        act = self.dashboard.requeue if action == "requeue" else self.dashboard.purge

        def perform() -> int:
            return sum(act(q, ids) for q, ids in selection.items())

        done = await run_in_threadpool(perform)
        verb = "requeued" if action == "requeue" else "purged"
        message = f"{verb} {done} job{'' if done == 1 else 's'}"
        queue = next(iter(selection)) if len(selection) == 1 else None
        return RedirectResponse(pages.url("/dlq", queue=queue, done=message), status_code=303)


def check_same_origin(request: Request) -> None:
    """HttpError 403 for a write posted from another site (a browser says so)."""
    if request.headers.get("sec-fetch-site") in ("cross-site", "same-site"):
        raise HttpError(403, "Refused", "a write action must be posted from the dashboard")
    origin = request.headers.get("origin")
    if origin is not None and (origin == "null" or urlsplit(origin).netloc !=
                               request.headers.get("host")):
        raise HttpError(403, "Refused", "a write action must be posted from the dashboard")


async def read_form(request: Request) -> dict[str, list[str]]:
    """An url-encoded form (what an HTML form posts), at most MAX_FORM_BYTES."""
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    if kind != "application/x-www-form-urlencoded":
        raise HttpError(415, "Unsupported form", "post an url-encoded form")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise HttpError(413, "Too large", "the form is too large")
    return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)


def selected(form: dict[str, list[str]]) -> dict[str, list[str] | None]:
    """What a form selects: queue -> job ids, or queue -> None for all of its dead jobs."""
    if form.get("all", [""])[0] == "1":
        queue = form.get("queue", [""])[0]
        if not queue:
            raise HttpError(400, "Nothing selected", "all=1 needs the queue")
        return {queue: None}
    chosen: dict[str, list[str]] = {}
    for value in form.get("job", []):
        queue, _, job_id = value.partition(" ")  # a queue name has no spaces
        if not queue or not job_id:
            raise HttpError(400, "Bad request", f"a job is 'queue id', got {value!r}")
        ids = chosen.setdefault(queue, [])
        if job_id not in ids:
            ids.append(job_id)
    if not chosen:
        raise HttpError(400, "Nothing selected", "select dead jobs first (the boxes on the "
                        "left of the dead letters)")
    return dict(chosen)


def describe_selection(selection: dict[str, list[str] | None], sizes: dict[str, int]) -> str:
    def jobs(n: int) -> str:
        return f"{n} dead job{'' if n == 1 else 's'}"

    if len(selection) == 1:
        [(queue, ids)] = selection.items()
        return (f"all {jobs(sizes[queue])} of queue {queue}" if ids is None else
                f"{jobs(sizes[queue])} of queue {queue}")
    return f"{jobs(sum(sizes.values()))} of {len(selection)} queues"


def back_to(selection: dict[str, list[str] | None]) -> str:
    if len(selection) == 1:
        [(queue, ids)] = selection.items()
        if ids is not None and len(ids) == 1:
            return pages.job_url(queue, ids[0])
        return pages.url("/dlq", queue=queue)
    return "/dlq"


def create_app(manager: QueueManager, *, read_only: bool = False, token: str | None = None,
               sample_interval: float = 5.0, window: float = 600.0, refresh: float = 2.0
               ) -> Starlette:
    """The dashboard of ``manager``'s prefix, as an ASGI app (serve it with uvicorn).

    ``read_only`` hides and refuses requeue and purge; ``token`` (if given) must be typed in to
    confirm them. The rate chart shows the last ``window`` seconds, sampled every
    ``sample_interval`` seconds; the queues page refreshes every ``refresh`` seconds."""
    if token == "":
        token = None
    web = Web(Dashboard(manager, window=window), read_only=read_only, token=token,
              refresh=refresh, sample_interval=sample_interval)

    def page_for(status: int, title: str) -> Callable[[Request, Exception], Awaitable[Response]]:
        async def handle(request: Request, exc: Exception) -> Response:
            code, heading, message = (
                (exc.status, exc.title, exc.message) if isinstance(exc, HttpError) else
                (status, title, str(exc)) if isinstance(exc, PyqcoreError) else
                (status, title, f"Redis: {type(exc).__name__}: {exc}"))
            if request.url.path.startswith("/api/"):
                return JSONResponse({"error": one_line(message)}, status_code=code)
            return web.error_page(code, heading, message)
        return handle

    routes = [
        Route("/", web.queues),
        Route("/partials/queues", web.queues_partial),
        Route("/api/queues", web.queues_json),
        Route("/workers", web.workers),
        Route("/dlq", web.dlq),
        Route("/dlq/requeue", web.requeue, methods=["POST"]),
        Route("/dlq/purge", web.purge, methods=["POST"]),
        Route("/dlq/{queue}/{job_id:path}", web.dead_job),
        Route("/healthz", web.healthz),
    ]
    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        HttpError: page_for(400, "Error"),
        UnknownQueueError: page_for(404, "Unknown queue"),
        PyqcoreError: page_for(400, "Bad request"),
        redis.RedisError: page_for(503, "Redis unavailable"),
        RedisClusterException: page_for(503, "Redis Cluster unavailable"),
    }
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=web.lifespan)
    app.state.web = web
    return app
