"""OpenTelemetry tracing (the optional extra ``pyqcore[otel]``) for a queue made with
``tracing=True``: ``add`` puts the caller's current trace context into the job's context with
the W3C Trace Context propagator (``traceparent`` and ``tracestate`` keys), and the worker
runs each job in a span ``pyqcore.run <queue>`` of kind CONSUMER, the child of the producer's
span, current while the handler runs; a failure is recorded on it with error status. A batch
handler's run is one span linked to each job's producer span. Spans go to the application's
tracer provider (``opentelemetry.trace.set_tracer_provider``); with ``tracing`` off this
module is never imported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextvars import Token
from typing import Any, cast

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from pyqcore.job import Job

PROPAGATOR = TraceContextTextMapPropagator()
TRACER = trace.get_tracer("pyqcore")  # a proxy: it follows a provider set later


class ContextGetter(Getter[Mapping[Any, Any]]):
    """Reads the propagator's keys from a job's context: only str values (a user's context
    may hold anything under any key)."""

    def get(self, carrier: Mapping[Any, Any], key: str) -> list[str] | None:
        value = carrier.get(key)
        return [value] if isinstance(value, str) else None

    def keys(self, carrier: Mapping[Any, Any]) -> list[str]:
        return [key for key in carrier if isinstance(key, str)]


GETTER = ContextGetter()


def inject(context: Any) -> Any:
    """A job's context carrying the current trace context: unchanged when no span is current
    or the context is not a dict (nothing to carry it in); a dict's own keys win."""
    carrier: dict[str, str] = {}
    PROPAGATOR.inject(carrier)
    if not carrier:
        return context
    if context is None:
        return carrier
    return {**carrier, **context} if isinstance(context, dict) else context


def producer_context(job: Job) -> otel_context.Context:
    """The trace context a job's producer injected (an empty one if none)."""
    carrier = job.context if isinstance(job.context, Mapping) else {}
    return PROPAGATOR.extract(carrier, getter=GETTER)


class Tracing:
    """One queue's tracing: injects on add, and observes each run as a span (a
    ``pyqcore.core.hooks.RunObserver``)."""

    def __init__(self, queue: str, partitioned: bool) -> None:
        self.queue = queue
        self.name = f"pyqcore.run {queue}"
        self.partitioned = partitioned
        self.inject = inject

    def _attributes(self, jobs: Sequence[Job]) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "messaging.system": "pyqcore",
            "messaging.operation.type": "process",
            "messaging.operation.name": "run",
            "messaging.destination.name": self.queue,
        }
        if len(jobs) == 1:
            job = jobs[0]
            attributes["messaging.message.id"] = job.id
            attributes["pyqcore.job.attempt"] = job.attempt
            if self.partitioned:
                attributes["messaging.destination.partition.id"] = str(job.partition)
        else:
            attributes["messaging.batch.message_count"] = len(jobs)
        return attributes

    def start(self, jobs: Sequence[Job]) -> tuple[trace.Span, Token[otel_context.Context]]:
        """Open the run's span and make it current (the handler's spans are its children)."""
        if len(jobs) == 1:
            parent, links = producer_context(jobs[0]), None
        else:  # one span for many producers: a link to each (OpenTelemetry's batch receive)
            parent = None
            contexts = (trace.get_current_span(producer_context(job)).get_span_context()
                        for job in jobs)
            links = [Link(c, {"messaging.message.id": job.id})
                     for c, job in zip(contexts, jobs, strict=True) if c.is_valid]
        span = TRACER.start_span(self.name, parent, kind=SpanKind.CONSUMER,
                                 attributes=self._attributes(jobs), links=links)
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        return span, token

    def end(self, handle: object, jobs: Sequence[Job],
            failed: Mapping[str, BaseException]) -> None:
        """Record what the run raised (error status) and close its span."""
        span, token = cast("tuple[trace.Span, Token[otel_context.Context]]", handle)
        otel_context.detach(token)
        recorded: set[int] = set()
        for job in jobs:
            exc = failed.get(job.id)
            if exc is not None and id(exc) not in recorded:  # a raising batch: once
                recorded.add(id(exc))
                span.record_exception(exc, {"messaging.message.id": job.id})
        if recorded:
            exc = next(failed[job.id] for job in jobs if job.id in failed)
            description = (f"{type(exc).__name__}: {exc}" if len(jobs) == 1 else
                           f"{sum(job.id in failed for job in jobs)} of {len(jobs)} jobs failed")
            span.set_status(Status(StatusCode.ERROR, description))
        span.end()
