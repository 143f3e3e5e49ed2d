"""The ``pyqcore`` command: stats, top, the dead-letter queue, script contracts, workers, the
web dashboard, the benchmark and the demo. Built on click (commands, options, prompts) and rich
(tables, the live ``top`` view, progress bars); ``pyqcore web`` on the optional Starlette and
uvicorn (the ``pyqcore[web]`` extra).

Connects to ``--url``, else PYQCORE_REDIS_URL, else REDIS_URL, else redis://localhost:6379/0.
Every error is one line on stderr, ``pyqcore: <what went wrong>``, with a non-zero exit
status (2 for a wrong command line, 1 otherwise, 130 when interrupted); set
PYQCORE_DEBUG=1 to get the traceback of an unexpected one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import click
import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException
from rich import box
from rich.console import Console, RenderableType
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from pyqcore.core.calls import QueueCalls
from pyqcore.core.dead_letters import CHUNK
from pyqcore.core.events import EventReader
from pyqcore.core.queue import clear_parts, read_group_counts, set_paused
from pyqcore.errors import (
    DeserializationError,
    PyqcoreError,
    RedisAuthenticationError,
    RedisUnavailableError,
    UnknownQueueError,
)
from pyqcore.job import decode_record, encode_record
from pyqcore.keys import DEFAULT_PREFIX, QueueKeys
from pyqcore.limits import GroupCounts
from pyqcore.rates import Rates
from pyqcore.scripts import load_scripts, lua_dir
from pyqcore.sentinel import is_sentinel_url, sentinel_client
from pyqcore.serializer import MSGPACK
from pyqcore.sync.driver import Client
from pyqcore.sync.manager import QueueManager
from pyqcore.sync.queue import read_events
from pyqcore.sync.supervisor import load_manager, run_processes, serve
from pyqcore.sync.worker import stop_on_signals

DEFAULT_URL = "redis://localhost:6379/0"
CONNECT_TIMEOUT = 5.0  # seconds to reach Redis before giving up (a URL option overrides it)
PROGRESS_MIN = CHUNK  # jobs from which requeue and purge show a progress bar (on a terminal)
WIDE = 200  # columns of a table printed to a pipe or a file (nothing to fit it to)
STATES = ("ready", "delayed", "leased", "dead")
COUNTERS = ("added", "completed", "retried", "dead", "reclaimed", "redriven", "purged",
            "orphaned")


# -- errors: one line each -----------------------------------------------------------------


class CliError(click.ClickException):
    """An error to report as ``pyqcore: <message>``, exit status 1."""

    exit_code = 1


def one_line(message: str) -> str:
    """``message`` with its line breaks (and the spaces around them) made single spaces."""
    return re.sub(r"\s*\n\s*", " ", message.strip()) or "unknown error"


def safe_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***`` (the hosts are kept as written: a
    Sentinel URL lists several), and so is every ``password`` option (``sentinel_password``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    userinfo, at, hosts = parts.netloc.rpartition("@")
    user, has_password, _ = userinfo.partition(":")
    netloc = f"{user}:***{at}{hosts}" if has_password else parts.netloc
    query = re.sub(r"((?:^|&)[^=&]*password=)[^&]*", r"\1***", parts.query)
    return urlunsplit(parts._replace(netloc=netloc, query=query))


REDIS_ERRORS: tuple[tuple[type[BaseException], str], ...] = (
    # (the first that matches wins: AuthenticationError and TimeoutError are ConnectionErrors)
    (redis.AuthenticationError, "Redis{where} refused the credentials: {exc}"),
    (redis.TimeoutError, "Redis{where} did not answer in time: {exc}"),
    (redis.ConnectionError, "cannot connect to Redis{where}: {exc}"),
    (redis.ResponseError, "Redis{where} replied with an error: {exc}"),
    (redis.RedisError, "Redis{where}: {name}: {exc}"),
    (RedisClusterException, "Redis Cluster{where}: {name}: {exc}"),
)


def describe(exc: BaseException, url: str | None) -> str:
    """What went wrong, in one line, for an exception a command raised (for Redis unreachable
    or refusing the credentials, redis-py's error behind pyqcore's, with the URL)."""
    if isinstance(exc, RedisUnavailableError | RedisAuthenticationError) and exc.__cause__:
        exc = exc.__cause__
    if isinstance(exc, PyqcoreError):
        return str(exc)
    where = f" at {safe_url(url)}" if url else ""
    for kind, template in REDIS_ERRORS:
        if isinstance(exc, kind):
            return template.format(where=where, exc=exc, name=type(exc).__name__)
    return f"unexpected {type(exc).__name__}: {exc} (PYQCORE_DEBUG=1 shows the traceback)"


class PyqcoreGroup(click.Group):
    """The command group, reporting every error as one line (see the module docstring)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except (KeyboardInterrupt, EOFError):
            raise
        except Exception as exc:
            if os.environ.get("PYQCORE_DEBUG"):
                raise
            state = ctx.obj if isinstance(ctx.obj, State) else None
            raise CliError(describe(exc, state.url if state else None)) from exc

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any
             ) -> Any:
        """Run the command; the exit status is returned (``standalone_mode=False``, as
        ``pyqcore.cli.main`` does) or exited with, after printing any error as one line."""
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False,
                                  **extra)
        except SystemExit as exc:  # bench passes on its script's status
            code = (exc.code or 0) if isinstance(exc.code, int | None) else \
                _fail(str(exc.code), 1)
        except Exception as exc:
            if os.environ.get("PYQCORE_DEBUG") and not isinstance(
                    exc, click.ClickException | click.Abort):
                raise  # an unexpected error raised before a command ran
            code = _fail(*failure(exc))
        else:
            code = result if isinstance(result, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


def failure(exc: Exception) -> tuple[str, int]:
    """The message and exit status of an error that reached the top."""
    if isinstance(exc, click.UsageError):
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        return exc.format_message() + hint, exc.exit_code
    if isinstance(exc, click.ClickException):
        return exc.format_message(), exc.exit_code
    if isinstance(exc, click.Abort):  # Ctrl-C, or end of input at a prompt
        return "interrupted", 130
    return describe(exc, None), 1


def _fail(message: str, code: int) -> int:
    click.echo(f"pyqcore: {one_line(message)}", err=True)
    return code


# -- connecting ---------------------------------------------------------------------------


@dataclass
class State:
    """The global options, and the manager made from them on first use."""

    url: str
    prefix: str
    cluster: bool
    _manager: QueueManager | None = field(default=None, repr=False)

    def manager(self) -> QueueManager:
        if self._manager is None:
            self._manager = QueueManager(self.client(), prefix=self.prefix)
        return self._manager

    def client(self) -> Client:
        """A client of ``url``: a Redis Cluster's with ``--cluster``, the primary of a
        ``redis+sentinel://`` URL's sentinels, else a plain server's."""
        if self.cluster and is_sentinel_url(self.url):
            raise click.UsageError("--cluster is for a Redis Cluster node's URL, not a "
                                   "redis+sentinel:// one")
        try:
            if self.cluster:
                return RedisCluster.from_url(self.url, socket_connect_timeout=CONNECT_TIMEOUT)
            if is_sentinel_url(self.url):
                return sentinel_client(self.url, socket_connect_timeout=CONNECT_TIMEOUT)
            return redis.Redis.from_url(self.url, socket_connect_timeout=CONNECT_TIMEOUT)
        except ValueError as exc:  # redis-py's word for a URL it cannot parse (and pyqcore's)
            raise CliError(f"invalid Redis URL {safe_url(self.url)!r}: {exc}") from exc

    def known_queues(self) -> list[str]:
        return self.manager().known_queue_names()

    def check_queue(self, name: str) -> None:
        """UnknownQueueError, listing the known queues, unless ``name`` is one of them."""
        known = self.known_queues()
        if name not in known:
            raise UnknownQueueError(f"unknown queue {name!r} under prefix {self.prefix!r} "
                                    f"(known: {', '.join(known) or 'none'})")

    def parts_of(self, name: str) -> list[QueueCalls]:
        """The script calls of each partition of queue ``name``."""
        manager = self.manager()
        parts: list[QueueCalls] = manager.driver.run(manager.core.registry.parts_of(name))
        return parts


def console() -> Console:
    """A console on stdout; one printed to a pipe or a file is wide (nothing to fit)."""
    out = Console(highlight=False)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out = Console(highlight=False, width=WIDE)
    return out


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


@click.group(cls=PyqcoreGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", metavar="URL",
              help="Redis URL (default: $PYQCORE_REDIS_URL, else $REDIS_URL, else "
                   f"{DEFAULT_URL}).")
@click.option("--prefix", default=DEFAULT_PREFIX, show_default=True, help="Key prefix.")
@click.option("--cluster", is_flag=True, help="The URL names a node of a Redis Cluster.")
@click.version_option(package_name="pyqcore", prog_name="pyqcore")
@click.pass_context
def cli(ctx: click.Context, url: str | None, prefix: str, cluster: bool) -> None:
    """A Redis job queue whose every state transition is one Lua script: inspect queues,
    manage the dead-letter queue, run workers."""
    url = (url or os.environ.get("PYQCORE_REDIS_URL") or os.environ.get("REDIS_URL")
           or DEFAULT_URL)
    ctx.obj = State(url=url, prefix=prefix, cluster=cluster)


pass_state = click.make_pass_decorator(State)


# -- stats and top --------------------------------------------------------------------------


@cli.command()
@click.option("--queue", "queues", multiple=True, metavar="QUEUE",
              help="Only this queue (repeatable).")
@pass_state
def stats(state: State, queues: tuple[str, ...]) -> None:
    """Show jobs per state and the counters of every queue.

    A partitioned queue's counts and counters are summed over its partitions."""
    for name in queues:
        state.check_queue(name)
    snapshot = state.manager().snapshot()
    if queues:
        snapshot = {name: view for name, view in snapshot.items() if name in queues}
    out = console()
    if not snapshot:
        out.print(f"no queues under prefix {state.prefix!r}")
        return
    rows = {name: (view.partitions, view.counts, view.stats) for name, view in snapshot.items()}
    counters = list(COUNTERS) + sorted({k for _, _, s in rows.values() for k in s} -
                                       set(COUNTERS))
    table = Table(box=box.SIMPLE_HEAD, title=f"pyqcore queues under prefix {state.prefix!r}",
                  title_justify="left")
    table.add_column("queue", no_wrap=True)
    table.add_column("parts", justify="right")
    for column in STATES:
        table.add_column(column, justify="right", style="bold")
    for column in counters:  # the counter of jobs that died is "died": "dead" is a state
        table.add_column("died" if column == "dead" else column, justify="right")
    for name, (partitions, counts, counted) in rows.items():
        table.add_row(Text(name), str(partitions), *(str(counts.get(s, 0)) for s in STATES),
                      *(str(counted.get(c, 0)) for c in counters))
    out.print(table)


def _top_frame(state: State, rates: Rates, error: str | None = None) -> RenderableType:
    snapshot = state.manager().snapshot()
    rates.add(time.monotonic(), {name: view.stats.get("completed", 0)
                                 for name, view in snapshot.items()})
    rows = [(name, view.counts, view.stats) for name, view in snapshot.items()]
    table = Table(box=box.SIMPLE_HEAD, title_justify="left",
                  title=f"pyqcore top · {safe_url(state.url)} · prefix {state.prefix!r} · "
                        f"{datetime.now():%H:%M:%S}",
                  caption=error or f"completed/s over the last {rates.window:g} s · Ctrl-C quits",
                  caption_justify="left")
    table.add_column("queue", no_wrap=True)
    for column in STATES:
        table.add_column(column, justify="right")
    table.add_column("completed/s", justify="right", style="bold")
    table.add_column("completed", justify="right")
    for name, counts, counted in rows:
        rate = rates.rate(name)
        table.add_row(Text(name), *(str(counts.get(s, 0)) for s in STATES),
                      "-" if rate is None else f"{rate:,.1f}", str(counted.get("completed", 0)))
    if not rows:
        table.add_row(Text(f"(no queues under prefix {state.prefix!r})"), *[""] * 6)
    return table


@cli.command()
@click.option("--port", type=click.IntRange(1, 65535), default=9108, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@pass_state
def metrics(state: State, port: int, host: str) -> None:
    """Serve Prometheus metrics of every queue and the workers alive, until Ctrl-C.

    Each scrape reads Redis afresh; needs the extra: pip install 'pyqcore[metrics]'."""
    try:
        from prometheus_client import start_http_server  # noqa: PLC0415 - an optional extra
        from prometheus_client.core import CollectorRegistry  # noqa: PLC0415

        from pyqcore.metrics import QueueCollector  # noqa: PLC0415
    except ImportError as exc:
        raise CliError("the metrics exporter needs pyqcore[metrics] "
                       "(pip install 'pyqcore[metrics]')") from exc
    registry = CollectorRegistry()
    registry.register(QueueCollector(state.manager()))
    start_http_server(port, addr=host, registry=registry)
    console().print(f"serving metrics on http://{host}:{port}/metrics (Ctrl-C stops)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return


@cli.command()
@pass_state
def workers(state: State) -> None:
    """Show the running workers (sync and asyncio, any host) and the jobs they hold.

    Every worker beats its presence every 5 s; one silent for three beats is not shown."""
    manager = state.manager()
    found = manager.workers()
    out = console()
    if not found:
        out.print(f"no workers under prefix {state.prefix!r}")
        return
    table = Table(box=box.SIMPLE_HEAD, title=f"pyqcore workers under prefix {state.prefix!r}",
                  title_justify="left")
    for column, justify in (("worker", "left"), ("driver", "left"), ("queues", "left"),
                            ("slots", "right"), ("up", "right"), ("done", "right"),
                            ("failed", "right"), ("held", "right"), ("oldest held", "left")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    now = manager.server_time()  # ages by the server's clock, as the beats are
    for w in found:
        oldest = ", ".join(f"{job_id} ({age:.0f}s)" for job_id, age in w.oldest[:3])
        table.add_row(Text(w.id), w.driver, Text(",".join(w.queues)), str(w.slots),
                      f"{now - w.started_at:.0f}s", str(w.done), str(w.failed), str(w.held),
                      Text(oldest or "-"))
    out.print(table)


@cli.command()
@click.option("--interval", type=click.FloatRange(min=0.05), default=1.0, show_default=True,
              help="Seconds between refreshes.")
@click.option("--window", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Seconds the completed rate is measured over.")
@click.option("--once", is_flag=True,
              help="Print one frame (two samples an interval apart, for the rate) and exit.")
@pass_state
def top(state: State, interval: float, window: float, once: bool) -> None:
    """Watch every queue live: states and completions per second.

    Refreshed every --interval seconds until Ctrl-C; the completed rate is measured over the
    last --window seconds."""
    rates = Rates(window)
    out = console()
    _top_frame(state, rates)  # the first sample; an error here is the command's error
    if once:
        time.sleep(interval)
        out.print(_top_frame(state, rates))
        return
    try:
        with Live(_top_frame(state, rates), console=out, auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                try:
                    frame = _top_frame(state, rates)
                except (redis.RedisError, RedisClusterException) as exc:  # shown, then retried
                    frame = Text(f"{datetime.now():%H:%M:%S} {describe(exc, state.url)}; "
                                 "retrying", style="red")
                live.update(frame, refresh=True)
    except KeyboardInterrupt:  # the way to quit
        return


# -- the dead-letter queue ------------------------------------------------------------------


@cli.group()
def dlq() -> None:
    """List, requeue or purge dead jobs (those that failed for good)."""


@dlq.command("list")
@click.option("--queue", metavar="QUEUE", help="Only this queue (default: every known queue).")
@click.option("--limit", type=click.IntRange(min=0), default=50, show_default=True)
@pass_state
def dlq_list(state: State, queue: str | None, limit: int) -> None:
    """Show dead jobs, oldest first (per queue)."""
    if queue is not None:
        state.check_queue(queue)
    items = state.manager().dead_letter_queue.items(queue=queue, limit=limit)
    out = console()
    if not items:
        out.print("no dead jobs" + (f" in queue {queue!r}" if queue else ""))
        return
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("queue", "id", "died", "attempts", "redrives", "error", "payload"):
        table.add_column(column, justify="right" if column in ("attempts", "redrives") else
                         "left", overflow="fold")
    for item in items:
        error = f"{item.error.type}: {item.error.message}" if item.error else "-"
        shown = repr(item.payload) if item.record is None else f"<raw {item.record!r:.60}>"
        table.add_row(Text(item.queue), Text(item.job_id),
                      f"{datetime.fromtimestamp(item.failed_at):%Y-%m-%d %H:%M:%S}",
                      str(item.attempts), str(item.redrives), Text(_clip(error, 120)),
                      Text(_clip(shown, 120)))
    out.print(table)


def _clip(value: str, width: int) -> str:
    value = one_line(value)
    return value if len(value) <= width else value[: width - 1] + "…"


def stdout_is_terminal() -> bool:
    """Whether stdout is a terminal (rich alone would also say so when FORCE_COLOR is set)."""
    try:
        return sys.stdout.isatty()
    except ValueError:  # closed
        return False


@contextmanager
def progress(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A function to advance a progress bar of ``total`` jobs: shown while inside, when
    stdout is a terminal, for ``PROGRESS_MIN`` jobs or more."""
    if total < PROGRESS_MIN or not stdout_is_terminal():
        yield lambda n: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=Console(force_terminal=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


def _selected(state: State, queue: str | None, ids: tuple[str, ...], everything: bool,
              command: str) -> list[str]:
    """The queues a requeue or a purge acts on; an error for no or contradictory selectors."""
    if everything and (queue is not None or ids):
        raise click.UsageError("--all selects every queue: give it without --queue or ids")
    if ids and queue is None:
        raise click.UsageError("job ids need the --queue they belong to")
    if queue is None and not everything:
        raise click.UsageError(f"dlq {command} needs a selector: --queue QUEUE (and job ids), "
                               "or --all for every known queue")
    if queue is not None:
        state.check_queue(queue)
        return [queue]
    return state.known_queues()


def _dead_ids(client: Client, parts: list[QueueCalls], ids: list[str]) -> int:
    """How many of ``ids`` are dead in any partition."""
    dead = 0
    for part in parts:
        for i in range(0, len(ids), CHUNK):
            dead += sum(s is not None for s in client.zmscore(part.keys.key("dead"),
                                                              ids[i : i + CHUNK]))
    return dead


@dlq.command("requeue")
@click.option("--queue", metavar="QUEUE", help="The queue whose dead jobs go back.")
@click.option("--all", "everything", is_flag=True, help="Every known queue's dead jobs.")
@click.argument("ids", nargs=-1)
@pass_state
def dlq_requeue(state: State, queue: str | None, ids: tuple[str, ...], everything: bool) -> None:
    """Send dead jobs back to their queue.

    IDS of --queue, every dead job of --queue, or (--all) of every queue, with their attempts
    reset. An operator's requeue ignores the redrive bound."""
    names = _selected(state, queue, ids, everything, "requeue")
    wanted = list(dict.fromkeys(ids))
    client = state.manager().client
    plan = [(name, state.parts_of(name)) for name in names]
    total = sum(_dead_ids(client, parts, wanted) if wanted else
                sum(client.zcard(p.keys.key("dead")) for p in parts) for _, parts in plan)
    dlq = state.manager().dead_letter_queue
    with progress("requeueing", total) as advance:
        moved = sum(dlq.requeue(name, wanted or None, on_progress=advance) for name in names)
    click.echo(f"requeued {plural(moved, 'job')}")


@dlq.command("purge")
@click.option("--queue", metavar="QUEUE", help="The queue whose dead jobs are deleted.")
@click.option("--all", "everything", is_flag=True, help="Every known queue's dead jobs.")
@click.option("--older-than", type=click.FloatRange(min=0), default=0.0, metavar="SECONDS",
              help="Only jobs dead for longer than this (default: all).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.argument("ids", nargs=-1)
@pass_state
def dlq_purge(state: State, queue: str | None, ids: tuple[str, ...],  # noqa: PLR0917
              everything: bool, older_than: float, yes: bool) -> None:
    """Delete dead jobs for good.

    IDS of --queue, every dead job of --queue, or (--all) of every queue; with --older-than,
    only those dead for longer. Asks first, showing how many, unless --yes."""
    names = _selected(state, queue, ids, everything, "purge")
    if ids and older_than:
        raise click.UsageError("--older-than selects by age: give it without job ids")
    wanted = list(dict.fromkeys(ids))
    client, dlq = state.manager().client, state.manager().dead_letter_queue
    total = (sum(_dead_ids(client, state.parts_of(name), wanted) for name in names) if wanted
             else sum(dlq.count(name, max_age=older_than) for name in names))
    what = f"queue {queue!r}" if queue is not None else \
        f"{plural(len(names), 'queue')} under prefix {state.prefix!r}"
    age = f" dead for more than {older_than:g} s" if older_than else ""
    if total == 0:
        click.echo(f"nothing to purge: no jobs{age or ' dead'} in {what}")
        return
    if not yes:
        confirm(f"Purge {plural(total, 'dead job')}{age} of {what} for good?", "purged", "purges")
    with progress("purging", total) as advance:
        purged = sum(dlq.purge(name, ids=wanted, on_progress=advance) if wanted else
                     dlq.purge(name, max_age=older_than, on_progress=advance) for name in names)
    click.echo(f"purged {plural(purged, 'job')}")


# -- schedules --------------------------------------------------------------------------------


@cli.group()
def schedules() -> None:
    """List, add or remove schedules (jobs added at cron times or every N seconds)."""


@schedules.command("list")
@pass_state
def schedules_list(state: State) -> None:
    """Show every schedule: its queue, when it runs and when it runs next (UTC)."""
    found = state.manager().schedules()
    if not found:
        click.echo(f"no schedules under prefix {state.prefix!r}")
        return
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("name", "queue", "when", "next due (UTC)", "payload"):
        table.add_column(column)
    for s in found:
        when = f"cron {s.cron} ({s.tz})" if s.cron is not None else f"every {s.every:g} s"
        due = s.next_due.strftime("%Y-%m-%d %H:%M:%S") if s.next_due else "-"
        table.add_row(s.name, s.queue, when, due, _clip(json.dumps(s.payload), 60))
    console().print(table)


@schedules.command("add")
@click.argument("name")
@click.option("--queue", required=True, metavar="QUEUE", help="The queue its jobs go to.")
@click.option("--cron", metavar="EXPR", help='A cron expression, e.g. "*/5 * * * *".')
@click.option("--every", type=float, metavar="SECONDS", help="Or a period, from the epoch.")
@click.option("--tz", default="UTC", show_default=True, help="The cron expression's zone.")
@click.option("--payload", metavar="JSON", help="The jobs' payload (JSON), default null.")
@click.option("--context", metavar="JSON", help="The jobs' context (JSON), default null.")
@click.option("--catch-up", type=int, default=1, show_default=True,
              help="Runs missed while no scheduler ran that are still added (the latest).")
@click.option("--max-retries", type=int, help="The jobs' own max_retries.")
@click.option("--timeout", type=float, help="The jobs' own timeout, in seconds.")
@pass_state
def schedules_add(state: State, name: str, queue: str, cron: str | None,  # noqa: PLR0917
                  every: float | None, tz: str, payload: str | None, context: str | None,
                  catch_up: int, max_retries: int | None, timeout: float | None) -> None:
    """Add (or redefine) the schedule NAME."""
    added = state.manager().schedule(
        name, queue, None if payload is None else _json_or_text(payload), cron=cron,
        every=every, tz=tz, context=None if context is None else _json_or_text(context),
        catch_up=catch_up, max_retries=max_retries, timeout=timeout)
    due = added.next_due.strftime("%Y-%m-%d %H:%M:%S") if added.next_due else "-"
    click.echo(f"schedule {name!r} adds to queue {queue!r}; next run due {due} UTC")


@schedules.command("remove")
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@pass_state
def schedules_remove(state: State, name: str, yes: bool) -> None:
    """Remove the schedule NAME (jobs it already added stay)."""
    manager = state.manager()
    if name not in {s.name for s in manager.schedules()}:
        raise CliError(f"no schedule named {name!r} under prefix {state.prefix!r}")
    if not yes:
        try:
            confirmed = click.confirm(f"Remove schedule {name!r}?", default=False, err=True)
        except click.Abort:
            click.echo(err=True)
            raise CliError("no answer: nothing removed (--yes removes without asking)") from None
        if not confirmed:
            raise CliError("not confirmed: nothing removed")
    manager.unschedule(name)
    click.echo(f"removed schedule {name!r}")


@cli.command()
@click.option("--queue", "queues", multiple=True, metavar="QUEUE",
              help="Only the schedules of this queue (repeatable; default: every schedule).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True)
@pass_state
def scheduler(state: State, queues: tuple[str, ...], log_level: str) -> None:
    """Add the due runs of schedules until SIGTERM/SIGINT; run as many as you like.

    Each due run is added once, whichever scheduler claims it. Payloads are encoded with
    MessagePack (the default serializer).
    """
    stop = threading.Event()
    with worker_logging(log_level), stop_on_signals(stop):
        state.manager().run_scheduler(stop, queues or None)
def confirm(question: str, done: str, verb: str) -> None:
    """Ask ``question`` on stderr; CliError ("nothing <done>") unless the answer is yes
    (``verb``: what --yes does without asking)."""
    try:
        confirmed = click.confirm(question, default=False, err=True)
    except click.Abort:  # end of input (or Ctrl-C) at the prompt
        click.echo(err=True)  # end the prompt's line
        raise CliError(f"no answer: nothing {done} (--yes {verb} without asking)") from None
    if not sys.stdin.isatty():  # the answer was not echoed: end the prompt's line
        click.echo(err=True)
    if not confirmed:
        raise CliError(f"not confirmed: nothing {done}")


@cli.command()
@click.argument("queue")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@pass_state
def clear(state: State, queue: str, yes: bool) -> None:
    """Delete every waiting job (ready and delayed) of QUEUE; running and dead jobs stay.

    Asks first, showing how many, unless --yes."""
    state.check_queue(queue)
    parts, run = state.parts_of(queue), state.manager().driver.run
    counts = [run(part.counts()) for part in parts]
    total = sum(c["ready"] + c["delayed"] for c in counts)
    if total == 0:
        click.echo(f"nothing to clear: no jobs waiting in queue {queue!r}")
        return
    if not yes:
        confirm(f"Delete {plural(total, 'waiting job')} of queue {queue!r}?", "deleted",
                "deletes")
    click.echo(f"deleted {plural(run(clear_parts(parts)), 'job')}")


# -- events ---------------------------------------------------------------------------------


@cli.command()
@click.argument("queue")
@click.option("--follow", "-f", is_flag=True,
              help="Then wait for new events and print each as it happens (until Ctrl-C).")
@click.option("--count", "-n", type=click.IntRange(min=1), metavar="N",
              help="Stop after N events.")
@pass_state
def events(state: State, queue: str, follow: bool, count: int | None) -> None:
    """Print the events of QUEUE (made with events=True), oldest first: every one its stream
    keeps, then with --follow the new ones as they happen.

    One line each: the server's time, the partition (a partitioned queue), the event, the
    job id and the attempt. Order holds within a partition."""
    state.check_queue(queue)
    parts = state.parts_of(queue)
    if not parts[0].settings.events:
        raise CliError(f"queue {queue!r} writes no events under prefix {state.prefix!r} (no "
                       "queue object made with events=True has announced it)")
    manager = state.manager()
    reader = EventReader(parts, manager.driver.cluster, since=0, block=follow)
    partitioned = len(parts) > 1
    try:
        for n, event in enumerate(read_events(manager.driver, reader), 1):
            when = datetime.fromtimestamp(event.time).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
            where = f"  #{event.partition}" if partitioned else ""
            click.echo(f"{when}{where}  {event.kind:<9}  {event.job_id}  "
                       f"attempt {event.attempt}")
            if n == count:
                break
    except KeyboardInterrupt:  # the way to stop --follow
        pass


# -- pause and resume -----------------------------------------------------------------------


def _set_paused(state: State, queue: str, group: str | None, paused: bool) -> None:
    state.check_queue(queue)
    manager = state.manager()
    changed: bool = manager.driver.run(set_paused(state.parts_of(queue), paused, group))
    what = f"group {group!r} of queue {queue!r}" if group is not None else f"queue {queue!r}"
    verb = "paused" if paused else "resumed"
    click.echo(f"{verb} {what}" if changed else f"{what} was already {verb}")


@cli.command()
@click.argument("queue")
@click.option("--group", metavar="GROUP", help="Only this group of the queue.")
@pass_state
def pause(state: State, queue: str, group: str | None) -> None:
    """Pause QUEUE (or one of its groups): workers lease nothing new from it until resumed.

    Jobs already leased run on and settle; adds go on. The pause is kept in Redis, so it
    holds across worker restarts."""
    _set_paused(state, queue, group, True)


@cli.command()
@click.argument("queue")
@click.option("--group", metavar="GROUP", help="Only this group of the queue.")
@pass_state
def resume(state: State, queue: str, group: str | None) -> None:
    """Resume QUEUE (or one of its groups) after a pause: workers lease from it again."""
    _set_paused(state, queue, group, False)


@cli.command()
@click.argument("queue")
@pass_state
def groups(state: State, queue: str) -> None:
    """Show QUEUE's groups: jobs ready and leased per group, and which are paused."""
    state.check_queue(queue)
    manager = state.manager()
    view: dict[str, GroupCounts] = manager.driver.run(read_group_counts(state.parts_of(queue)))
    out = console()
    if not view:
        out.print(f"queue {queue!r} has no group with jobs ready or leased, and none paused")
        return
    table = Table(box=box.SIMPLE_HEAD, title=f"groups of queue {queue!r}", title_justify="left")
    for column, justify in (("group", "left"), ("ready", "right"), ("active", "right"),
                            ("paused", "left")):
        table.add_column(column, justify=justify, no_wrap=column == "group")  # type: ignore[arg-type]
    for name, counts in sorted(view.items()):
        table.add_row(Text(name), str(counts.ready), str(counts.active),
                      "paused" if counts.paused else "")
    out.print(table)


# -- scripts, worker, bench, demo -----------------------------------------------------------


@cli.command()
@click.option("--queue", default="myqueue", show_default=True,
              help="The queue named in the example keys.")
@pass_state
def scripts(state: State, queue: str) -> None:
    """Print each Lua script's SHA, contract and a redis-cli line (with the keys every call
    sends: the optional ones, as the ranked add's or the events stream, as its header says)."""
    keys = QueueKeys(state.prefix, queue)
    folder = lua_dir()
    for name, script in sorted(load_scripts().items()):
        parts = [keys.lock("ITEM") if p == "lock" else keys.key(p)
                 for p in script.required_parts]
        flags = f"  flags {','.join(script.flags)}" if script.flags else ""
        click.echo(f"== {name}  sha1 {script.sha}{flags}")
        click.echo(script.header)
        click.echo(f"  $ redis-cli --eval {Path(str(folder)) / (name + '.lua')} "
                   + " ".join(parts) + " , ARGV...\n")


@cli.command()
@click.argument("payload", required=False)
@click.option("--context", metavar="JSON", help="The job's context (JSON), default null.")
@click.option("--decode", is_flag=True,
              help="Read a stored record on stdin (e.g. redis-cli --raw HGET ...) and print it.")
def record(payload: str | None, context: str | None, decode: bool) -> None:
    """Write a job record for redis-cli to add, or read one that redis-cli fetched.

    A record is MessagePack [payload, context, enqueued_ms], binary (its timestamp holds NUL
    bytes a shell argument cannot carry), so it goes through a pipe: PAYLOAD (JSON, or any
    other text as a string) is written to stdout for `redis-cli -x`, which sends stdin as the
    last argument. With --decode, stdin is a stored record, printed as JSON."""
    if decode:
        data = sys.stdin.buffer.read()
        try:
            value, ctx, enqueued_ms, _ = decode_record(MSGPACK, data)
        except DeserializationError:
            if not data.endswith(b"\n"):  # redis-cli --raw ends its output with a newline
                raise
            value, ctx, enqueued_ms, _ = decode_record(MSGPACK, data[:-1])
        click.echo(json.dumps({"payload": value, "context": ctx,
                               "enqueued_at": enqueued_ms / 1000}, default=repr))
        return
    if payload is None:
        raise click.UsageError("give the PAYLOAD to encode, or --decode")
    data = encode_record(MSGPACK, _json_or_text(payload),
                         None if context is None else _json_or_text(context),
                         int(time.time() * 1000), 512 * 1024 * 1024)
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


@contextmanager
def worker_logging(level: str) -> Iterator[None]:
    """While inside, pyqcore's log records go to stderr at ``level`` (unless the app set up
    logging itself: then it decides)."""
    logger = logging.getLogger("pyqcore")
    configured = logging.getLogger().handlers or any(
        not isinstance(h, logging.NullHandler) for h in logger.handlers)
    if configured:
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        "%(asctime)s pyqcore[%(process)d] %(levelname)s %(message)s"))
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


@cli.command()
@click.argument("app")
@click.option("--queue", "queues", multiple=True, metavar="QUEUE",
              help="Only this queue (repeatable; default: every registered queue with a "
                   "handler).")
@click.option("--concurrency", "-c", type=click.IntRange(min=1),
              help="Slot threads per queue (default: one per core, divided among --processes).")
@click.option("--processes", "-p", type=click.IntRange(min=1),
              help="Run N worker processes under a supervisor that restarts any that dies "
                   "(default: this one process).")
@click.option("--burst", is_flag=True, help="Stop when nothing is ready.")
@click.option("--schedules", is_flag=True,
              help="Also add the due runs of the queues' schedules (any number of workers "
                   "and schedulers may: each run is added once).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True)
@click.option("--metrics-port", type=click.IntRange(1, 65535), metavar="PORT",
              help="Serve the worker metrics (job run time, wait; pyqcore[metrics]) on PORT "
                   "(with --processes N: PORT to PORT+N-1, one per process).")
@click.option("--metrics-host", default="127.0.0.1", show_default=True,
              help="Address the worker metrics listen on.")
@click.option("--parent-pid", type=int, hidden=True)  # set by the supervisor for its children
def worker(app: str, queues: tuple[str, ...], concurrency: int | None,  # noqa: PLR0917
           processes: int | None, burst: bool, schedules: bool, log_level: str,
           metrics_port: int | None, metrics_host: str, parent_pid: int | None) -> int:
    """Run the queues of APP until SIGTERM/SIGINT.

    APP is a QueueManager as module:attribute (e.g. myapp.jobs:manager). On SIGTERM/SIGINT
    in-flight jobs finish and unstarted ones go back to their queue. With --processes N, N
    worker processes run under a supervisor that restarts one that dies and forwards
    SIGTERM/SIGINT to all of them; a second signal kills them at once."""
    with worker_logging(log_level):
        if processes is not None:
            return run_processes(app, processes, queues=queues, concurrency=concurrency,
                                 burst=burst, schedules=schedules, metrics_port=metrics_port,
                                 metrics_host=metrics_host)
        manager = load_manager(app)
        reports = serve(manager, queues, concurrency=concurrency, burst=burst,
                        schedules=schedules, app=app, parent_pid=parent_pid,
                        metrics_port=metrics_port, metrics_host=metrics_host)
    for name, report in reports.items():
        click.echo(f"{name}: {report}")
    return 0


@cli.command(context_settings={"ignore_unknown_options": True,
                               "allow_interspersed_args": False})
@click.argument("bench_args", nargs=-1, type=click.UNPROCESSED)
def bench(bench_args: tuple[str, ...]) -> int:
    """Run the benchmark suite against the peers.

    It is a source checkout's bench/run.py; every argument goes to it."""
    for root in (Path.cwd(), Path(__file__).resolve().parent.parent):
        script = root / "bench" / "run.py"
        if script.exists():
            return subprocess.call([sys.executable, str(script), *bench_args])
    raise CliError("the benchmark suite ships with the source, not the wheel: run "
                   "`pyqcore bench` (or `make bench`) in a pyqcore checkout")


LOOPBACK = ("127.0.0.1", "::1", "localhost")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option("--read-only", is_flag=True,
              help="Hide and refuse requeue and purge: a dashboard to look only.")
@click.option("--token", metavar="TOKEN", envvar="PYQCORE_WEB_TOKEN",
              help="Requeue and purge ask for this token (default: $PYQCORE_WEB_TOKEN).")
@pass_state
def web(state: State, host: str, port: int, read_only: bool, token: str | None) -> None:
    """Serve the web dashboard: queues, workers, dead letters.

    Needs the pyqcore[web] extra (Starlette, uvicorn). Listens on 127.0.0.1 unless --host
    says otherwise; anyone who reaches it can requeue and purge dead jobs unless --read-only,
    or --token (then confirming asks for the token)."""
    try:
        import uvicorn  # noqa: PLC0415 - an optional extra, only this command needs it

        from pyqcore.web import create_app  # noqa: PLC0415
    except ImportError as exc:
        if (exc.name or "").split(".")[0] not in ("uvicorn", "starlette", "anyio"):
            raise
        raise CliError("the web dashboard needs pyqcore[web] "
                       "(pip install 'pyqcore[web]')") from None
    state.known_queues()  # reach Redis now: an error is one line, not a page per request
    if host not in LOOPBACK and not read_only and not token:
        click.echo(f"pyqcore: warning: listening on {host} with requeue and purge open to "
                   "anyone who reaches it (--token or --read-only closes them)", err=True)
    app = create_app(state.manager(), read_only=read_only, token=token)
    click.echo(f"pyqcore web: http://{'[' + host + ']' if ':' in host else host}:{port}/ "
               f"(Redis {safe_url(state.url)}, prefix {state.prefix!r}"
               f"{', read-only' if read_only else ''}{', token required' if token else ''})")
    uvicorn.run(app, host=host, port=port, log_level="warning")


@cli.command()
@click.option("--jobs", type=click.IntRange(min=1), default=10_000, show_default=True)
def demo(jobs: int) -> None:
    """Run the demo.

    It uses a throwaway local redis-server unless PYQCORE_REDIS_URL or REDIS_URL is set
    (then it touches only keys under pyqcore-demo:)."""
    from pyqcore import demo as demo_module  # noqa: PLC0415 - only this command needs it

    demo_module.run(jobs=jobs)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pyqcore`` command; returns the exit status."""
    code: int = cli.main(args=list(argv) if argv is not None else None, prog_name="pyqcore",
                         standalone_mode=False)
    return code
