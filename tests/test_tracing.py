"""OpenTelemetry tracing (``pyqcore.tracing``, a queue made with ``tracing=True``) through the
real SDK and its in-memory exporter: the producer's trace context travels in the job's context,
the worker's run span is its child (current while the handler runs) with the messaging
attributes, a failure marks the span, a batch run links its producers; on both drivers."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from pyqcore import Backoff, ConfigurationError, Job, NonRetryableError
from pyqcore.sync.driver import Client
from tests.conftest import BOTH_DRIVERS
from tests.support.drivers import Api

EXPORTER = InMemorySpanExporter()
tracer = trace.get_tracer("tests")


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The spans finished during the test (the SDK's provider is set once per process)."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
        trace.set_tracer_provider(provider)
    EXPORTER.clear()
    yield EXPORTER
    EXPORTER.clear()


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


@BOTH_DRIVERS
def test_a_trace_goes_from_add_to_the_handler(api: Api, client: Client,
                                             spans: InMemorySpanExporter) -> None:
    contexts: list[Any] = []

    async def handle(job: Job) -> None:  # awaited: on the asyncio loop, or the slot's own
        contexts.append(job.context)
        with tracer.start_as_current_span("send email"):
            pass

    queue = api.BaseQueue(client, name="mail", handler=handle, tracing=True)
    with tracer.start_as_current_span("signup") as producer:
        job_id = queue.add({"to": "a@example.com"}, context={"user": 7})
    queue.process(burst=True)
    [run] = named(spans, "pyqcore.run mail")
    [work] = named(spans, "send email")
    produced = producer.get_span_context()
    assert run.context is not None and run.parent is not None and work.parent is not None
    assert run.context.trace_id == produced.trace_id == work.context.trace_id
    assert run.parent.span_id == produced.span_id  # the run is the producer's child
    assert work.parent.span_id == run.context.span_id  # and the handler's spans are its own
    assert run.kind is SpanKind.CONSUMER
    assert run.status.status_code is StatusCode.UNSET
    assert dict(run.attributes or {}) == {
        "messaging.system": "pyqcore", "messaging.operation.type": "process",
        "messaging.operation.name": "run", "messaging.destination.name": "mail",
        "messaging.message.id": job_id, "pyqcore.job.attempt": 1}
    [context] = contexts  # the W3C header beside the producer's own context
    assert context["user"] == 7
    assert context["traceparent"] == (f"00-{produced.trace_id:032x}-"
                                      f"{produced.span_id:016x}-{produced.trace_flags:02x}")


@BOTH_DRIVERS
def test_a_failing_run_has_an_error_status_and_the_exception(
        api: Api, client: Client, spans: InMemorySpanExporter) -> None:
    def handle(job: Job) -> None:
        raise ValueError(f"cannot send {job.payload}")

    queue = api.BaseQueue(client, name="mail", handler=handle, tracing=True, partitions=2,
                          max_retries=1, backoff=Backoff.fixed(0))
    with tracer.start_as_current_span("signup"):
        queue.add("x", partition_key="k")
    queue.process(burst=True)
    runs = named(spans, "pyqcore.run mail")
    assert [run.attributes["pyqcore.job.attempt"] for run in runs] == [1, 2]  # type: ignore[index]
    for run in runs:
        assert run.status.status_code is StatusCode.ERROR
        assert run.status.description == "ValueError: cannot send x"
        [event] = run.events
        assert event.name == "exception"
        assert event.attributes is not None
        assert event.attributes["exception.type"] == "ValueError"
        assert run.attributes is not None
        assert run.attributes["messaging.destination.partition.id"] in ("0", "1")
    assert queue.counts()["dead"] == 1


@BOTH_DRIVERS
def test_a_batch_handler_s_runs_carry_each_job_s_producer(api: Api, client: Client,
                                                           spans: InMemorySpanExporter) -> None:
    def handle(jobs: list[Job]) -> Mapping[str, BaseException]:
        return {job.id: NonRetryableError("bad") for job in jobs if job.payload == "untraced"}

    queue = api.BaseQueue(client, name="bulk", batch_handler=handle, tracing=True)
    producers = []
    for _ in range(2):
        with tracer.start_as_current_span("produce") as span:
            queue.add_batch(["a", "b"])
        producers.append(span.get_span_context())
    queue.add_batch(["untraced"])  # no span current: the job carries no trace context
    queue.process(burst=True, prefetch=100)
    runs = named(spans, "pyqcore.run bulk")
    # Batch sizes adapt (from one job): a run of one job is that job's child, a run of
    # several is linked to each of their producers.
    producer_ids = [run.parent.span_id for run in runs if run.parent is not None] + [
        link.context.span_id for run in runs for link in run.links]
    assert sorted(producer_ids) == sorted([p.span_id for p in producers] * 2)
    sizes = [(run.attributes or {}).get("messaging.batch.message_count", 1) for run in runs]
    assert all(isinstance(size, int) for size in sizes)
    assert sum(size for size in sizes if isinstance(size, int)) == 5
    assert [run.status.status_code for run in runs].count(StatusCode.ERROR) == 1


def test_a_run_of_several_jobs_links_them_and_records_a_raise_once(
        spans: InMemorySpanExporter) -> None:
    from pyqcore.tracing import Tracing  # noqa: PLC0415

    traced = Tracing("bulk", partitioned=False)
    with tracer.start_as_current_span("produce") as producer:
        contexts = [traced.inject(None), traced.inject({"user": 1})]
    jobs = [Job(str(i), "bulk", None, context, 1, 0.0, "t", 0.0)
            for i, context in enumerate([*contexts, "not a dict"])]
    raised = RuntimeError("the whole batch")
    for failed in ({"1": ValueError("one")}, dict.fromkeys(("0", "1", "2"), raised)):
        traced.end(traced.start(jobs), jobs, failed)
    one, whole = named(spans, "pyqcore.run bulk")
    for run in (one, whole):
        assert run.parent is None
        assert [link.context.span_id for link in run.links] == [
            producer.get_span_context().span_id] * 2
        assert [link.attributes for link in run.links] == [
            {"messaging.message.id": "0"}, {"messaging.message.id": "1"}]
        assert run.attributes is not None
        assert run.attributes["messaging.batch.message_count"] == 3
        assert "messaging.message.id" not in run.attributes
    assert one.status.description == "1 of 3 jobs failed"
    assert whole.status.description == "3 of 3 jobs failed"
    assert [e.attributes["exception.message"] for e in one.events] == ["one"]  # type: ignore[index]
    assert [e.attributes["exception.message"] for e in whole.events] == [  # type: ignore[index]
        "the whole batch"]


@BOTH_DRIVERS
def test_contexts_without_a_span_or_not_a_dict_are_left_as_they_are(
        api: Api, client: Client, spans: InMemorySpanExporter) -> None:
    queue = api.BaseQueue(client, name="mail", tracing=True)
    queue.add("no span")
    with tracer.start_as_current_span("signup"):
        queue.add("a list", context=[1, 2])
        queue.add("own header", context={"traceparent": "mine"})
    untraced = api.BaseQueue(client, name="plain")
    with tracer.start_as_current_span("signup"):
        untraced.add("off")
    jobs = queue.reserve(count=3) + untraced.reserve()
    assert [job.context for job in jobs] == [None, [1, 2], {"traceparent": "mine"}, None]


@BOTH_DRIVERS
def test_tracing_must_be_a_bool(api: Api, client: Client) -> None:
    with pytest.raises(ConfigurationError, match="tracing"):
        api.BaseQueue(client, name="mail", tracing="yes")  # type: ignore[arg-type]
