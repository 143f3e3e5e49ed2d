"""The web dashboard (``pyqcore web``) in a real headless Chromium (Debian's ``/usr/bin/chromium``
driven by Playwright; never a downloaded browser), served by uvicorn on a free loopback port in
a thread, over a real redis-server (and a Redis Cluster) with real jobs: a burst worker kills
some into the dead-letter queue. Each page's figures are checked against ``counts()``,
``stats()`` and ``count()``; a requeue and a purge are done by clicking (and confirming);
read-only mode and the token refuse writes; a ``<script>`` payload is shown as text.

The app is built, as ``pyqcore web`` builds it, from a manager that registers no queue: it
knows them only by name (and a partitioned queue by its recorded partition count).

The queues page's screenshot is saved in the test's temp directory (the README's,
tests/web/dashboard.png, was taken the same way under a steadier load).
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import uvicorn
from click.testing import CliRunner
from playwright.sync_api import Browser, Page, expect, sync_playwright
from starlette.applications import Starlette

from pyqcore import BaseQueue, Job, NonRetryableError, QueueManager, Worker
from pyqcore.cli import cli
from pyqcore.keys import QueueKeys
from pyqcore.sync.driver import Client
from pyqcore.web import create_app
from pyqcore.web.pages import h
from tests.conftest import BOTH_BACKENDS, Backend
from tests.support import LocalRedis, free_port, wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason=f"{CHROMIUM} is missing (Debian's chromium package; CI's .ci/run installs it)")
PREFIX = "webtest"
SCRIPT = "<script>window.__pwned = 1</script>"


# -- a server, a browser, jobs ------------------------------------------------------------------


@contextmanager
def served(app: Starlette) -> Iterator[str]:
    """``app`` served by uvicorn on a free loopback port, in a thread; its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), 10, "uvicorn started")
        assert thread.is_alive(), "uvicorn failed to start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(10_000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    yield tab
    context.close()
    # No JavaScript error or script refused by the Content-Security-Policy on any page (the
    # 403 and 404 pages the tests ask for are logged too: their statuses are checked).
    expected = re.compile(r"Failed to load resource: .* status of 40[34] ")
    assert [e for e in errors if not expected.match(e)] == [], errors


def handler(job: Job) -> None:
    """Jobs whose payload says "die" fail for good; "slow" ones take a little while."""
    if job.payload.get("slow"):
        time.sleep(0.004)
    if job.payload.get("die"):
        raise NonRetryableError(job.payload["die"])


def app_manager(client: Client) -> tuple[QueueManager, QueueManager]:
    """The application's manager (registers the queues, runs the workers) and the
    dashboard's (registers nothing, as ``pyqcore web``'s)."""
    manager = QueueManager(client, prefix=PREFIX)
    manager.register("emails", handler=handler)
    manager.register("reports", handler=handler, partitions=3)
    return manager, QueueManager(client, prefix=PREFIX)


def run_burst(queue: BaseQueue) -> None:
    Worker(queue, stop=threading.Event(), burst=True).run(install_signal_handlers=False)


def fill(manager: QueueManager) -> None:
    """12 emails (3 die, one with a <script> payload) and 9 reports (3 die) processed; then
    some ready and delayed jobs left waiting."""
    emails, reports = manager.get_queue("emails"), manager.get_queue("reports")
    emails.add_batch([{"n": i, **({"die": f"smtp refused <b>{i}</b>"} if i % 4 == 0 else {}),
                       **({"note": SCRIPT} if i == 0 else {})} for i in range(12)])
    reports.add_batch([{"n": i, **({"die": f"missing column {i}"} if i % 3 == 0 else {})}
                       for i in range(9)], partition_keys=[f"k{i}" for i in range(9)])
    run_burst(emails)
    run_burst(reports)
    emails.add_batch([{"n": 100 + i} for i in range(5)])
    emails.add_batch([{"n": 200 + i} for i in range(2)], delay=3600)
    reports.add_batch([{"n": 300 + i} for i in range(4)], partition_keys=["a", "b", "c", "d"])


def bury(queue: BaseQueue, count: int, error: str = "bad") -> dict[str, str]:
    """Add ``count`` jobs and fail each for good (no worker needed): id -> error message."""
    queue.add_batch([{"n": i} for i in range(count)])
    errors: dict[str, str] = {}
    while jobs := queue.reserve(count=100):
        for job in jobs:
            errors[job.id] = f"{error} {job.payload['n']}"
            queue.fail(job, ValueError(errors[job.id]), retry=False)
    return errors


def number(text: str) -> int:
    return int(text.replace(",", "").strip())


def queues_table(page: Page) -> dict[str, dict[str, Any]]:
    """The queues page's table: queue -> {"partitions", "counts", "stats"} as shown."""
    rows: list[dict[str, Any]] = page.eval_on_selector_all("#queues tbody tr[data-queue]", """
        rows => rows.map(r => ({
          queue: r.dataset.queue,
          cols: Object.fromEntries([...r.querySelectorAll('[data-col]')]
                                   .map(c => [c.dataset.col, c.textContent])),
          stats: Object.fromEntries([...r.querySelectorAll('[data-stat]')]
                                    .map(c => [c.dataset.stat, c.textContent]))}))""")
    return {r["queue"]: {
        "partitions": number(r["cols"].pop("partitions")),
        "counts": {k: number(v) for k, v in r["cols"].items()},
        "stats": {k: number(v) for k, v in r["stats"].items() if number(v)}} for r in rows}


def expected_queues(manager: QueueManager) -> dict[str, dict[str, Any]]:
    return {name: {"partitions": q.partitions, "counts": q.counts(), "stats": q.stats()}
            for name, q in manager.queues.items()}


def post(url: str, fields: list[tuple[str, str]], headers: dict[str, str] | None = None
         ) -> tuple[int, str]:
    """POST an url-encoded form (no browser); the status and the body."""
    request = urllib.request.Request(url, data=urlencode(fields).encode(), method="POST",
                                     headers={"Content-Type":
                                              "application/x-www-form-urlencoded",
                                              **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def dead_row(page: Page, queue: str, job_id: str) -> Any:
    return page.locator(f'#dead tr[data-job="{queue} {job_id}"]')


# -- the pages ----------------------------------------------------------------------------------


@needs_chromium
def test_every_page_shows_what_the_api_says_and_a_requeue_is_a_click(
        page: Page, client: Client, tmp_path: Path) -> None:
    manager, viewer = app_manager(client)
    fill(manager)
    emails = manager.get_queue("emails")
    dlq = manager.dead_letter_queue
    app = create_app(viewer, sample_interval=0.25, window=60, refresh=0.5)
    with served(app) as base:
        # Queues: every figure is counts() and stats(), summed over the partitions.
        page.goto(base + "/")
        assert queues_table(page) == expected_queues(manager)
        assert number(page.inner_text("#total-dead")) == dlq.count() == 6

        # Jobs completed while the page is open: the page refreshes itself (JS polling) and
        # the server-sampled chart draws the completed rate.
        emails.add_batch([{"n": 1000 + i, "slow": True} for i in range(400)])
        run_burst(emails)
        completed = emails.stats()["completed"]
        expect(page.locator('#queues tr[data-queue="emails"] [data-stat="completed"]')
               ).to_have_text(f"{completed:,}")
        expect(page.locator('#rate-chart polyline[data-queue="emails"]')).to_be_attached()
        page.wait_for_timeout(1200)  # more samples: the burst shows as a peak, then a fall
        assert queues_table(page) == expected_queues(manager)
        page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

        # Workers: what manager.workers() says, if the manager has a worker registry.
        check_workers_page(page, base, manager, viewer)

        # Dead letters: everything, one queue, or matching an error text.
        page.goto(base + "/dlq")
        assert number(page.inner_text("#dead-total")) == dlq.count() == 6
        assert page.locator("#dead tbody tr[data-job]").count() == 6
        page.select_option("#search select[name=queue]", "reports")
        page.click("#search button")
        expect(page.locator("#dead-total")).to_have_text(str(dlq.count("reports")))
        keys = page.eval_on_selector_all("#dead tr[data-job]", "rs => rs.map(r => r.dataset.job)")
        assert sorted(keys) == sorted(f"reports {i.job_id}" for i in dlq.items("reports"))
        page.select_option("#search select[name=queue]", "")
        page.fill("#search input[name=q]", "SMTP refused")
        page.click("#search button")
        keys = page.eval_on_selector_all("#dead tr[data-job]", "rs => rs.map(r => r.dataset.job)")
        assert sorted(keys) == sorted(f"emails {i.job_id}" for i in dlq.items("emails"))
        assert page.locator("#summary").inner_text().startswith("3 of 6 dead jobs examined")

        # A payload with <script> is shown as text, on the list and on the job's page.
        [scripted] = [i for i in dlq.items("emails") if i.payload.get("note") == SCRIPT]
        row = dead_row(page, "emails", scripted.job_id)
        assert SCRIPT in row.locator(".payload").inner_text()
        row.locator("a").click()
        expect(page.locator("#job-id")).to_have_text(scripted.job_id)
        assert SCRIPT in page.inner_text("#payload")
        assert page.inner_text("#error") == "NonRetryableError: smtp refused <b>0</b>"
        assert "NonRetryableError" in page.inner_text("#traceback")
        assert page.evaluate("window.__pwned") is None
        assert page.locator("#payload *").count() == 0  # text only: no element inside
        assert "&lt;b&gt;0&lt;/b&gt;" in page.inner_html("#error")

        # Requeue through the page: tick the job, requeue, confirm; it is ready again.
        ready = emails.counts()["ready"]
        page.goto(base + "/dlq?queue=emails")
        page.check("input[data-select-all]")
        assert page.locator("input[name=job]:checked").count() == 3
        page.uncheck("input[data-select-all]")
        dead_row(page, "emails", scripted.job_id).locator("input[name=job]").check()
        page.click("#requeue-selected")
        expect(page.locator("#question")).to_contain_text("Requeue 1 dead job of queue emails?")
        assert dlq.count("emails") == 3  # nothing happens before the confirmation
        page.click("#confirm")
        expect(page.locator("#done")).to_have_text("requeued 1 job")
        assert dlq.count("emails") == 2 and emails.counts()["ready"] == ready + 1
        ready_key = QueueKeys(PREFIX, "emails").key("ready")
        assert client.lpos(ready_key, scripted.job_id) is not None
        assert number(page.inner_text("#dead-total")) == 2

        # Purge one of a partitioned queue from its page; its page is then gone.
        victim = dlq.items("reports")[0]
        page.goto(base + f"/dlq/reports/{victim.job_id}")
        page.click("#purge-job")
        expect(page.locator("#question")).to_contain_text("Purge 1 dead job of queue reports?")
        page.click("#confirm")
        expect(page.locator("#done")).to_have_text("purged 1 job")
        assert dlq.count("reports") == 2
        response = page.goto(base + f"/dlq/reports/{victim.job_id}")
        assert response is not None and response.status == 404

        # A write posted from another site is refused.
        status, _ = post(base + "/dlq/purge", [("queue", "emails"), ("all", "1"),
                                               ("confirm", "yes")],
                         {"Origin": "http://elsewhere.example"})
        assert status == 403 and dlq.count("emails") == 2


def check_workers_page(page: Page, base: str, manager: QueueManager,
                       viewer: QueueManager) -> None:
    stop = threading.Event()
    worker = Worker(manager.get_queue("reports"), stop=stop)
    thread = threading.Thread(target=worker.run, kwargs={"install_signal_handlers": False})
    thread.start()
    try:
        wait_until(lambda: len(viewer.workers()) > 0, 10, "the worker registered")
        page.goto(base + "/workers")
        shown = page.eval_on_selector_all("#workers tbody tr",
                                          "rs => rs.map(r => r.dataset.worker)")
        assert shown == [str(getattr(w, "id", "")) for w in viewer.workers()]
    finally:
        stop.set()
        thread.join(10)


@needs_chromium
def test_read_only_hides_and_refuses_writes(page: Page, client: Client) -> None:
    manager, viewer = app_manager(client)
    ids = list(bury(manager.get_queue("emails"), 3))
    dlq = manager.dead_letter_queue
    with served(create_app(viewer, read_only=True)) as base:
        page.goto(base + "/dlq?queue=emails")
        expect(page.locator("header .mode")).to_have_text("read-only")
        assert number(page.inner_text("#dead-total")) == 3
        for hidden in ("input[name=job]", "#requeue-selected", "#purge-selected",
                       "#requeue-all", "#purge-all", "form[method=post]"):
            assert page.locator(hidden).count() == 0, hidden
        page.goto(base + f"/dlq/emails/{ids[0]}")
        expect(page.locator("#job-id")).to_have_text(ids[0])
        assert page.locator("form[method=post]").count() == 0
        for action in ("requeue", "purge"):
            status, body = post(base + f"/dlq/{action}",
                                [("job", f"emails {ids[0]}"), ("confirm", "yes")])
            assert status == 403 and "read-only" in body
        assert dlq.count("emails") == 3


@needs_chromium
def test_a_token_is_asked_to_confirm(page: Page, client: Client) -> None:
    manager, viewer = app_manager(client)
    bury(manager.get_queue("emails"), 4)
    dlq = manager.dead_letter_queue
    with served(create_app(viewer, token="s3cret")) as base:
        page.goto(base + "/dlq?queue=emails")
        page.click("#requeue-all")
        expect(page.locator("#question")).to_contain_text("all 4 dead jobs of queue emails")
        page.fill("#token", "wrong")
        page.click("#confirm")
        expect(page.locator("#message")).to_have_text("wrong token: nothing was done")
        assert dlq.count("emails") == 4
        page.fill("#token", "s3cret")
        page.click("#confirm")
        expect(page.locator("#done")).to_have_text("requeued 4 jobs")
        assert dlq.count("emails") == 0
        assert manager.get_queue("emails").counts()["ready"] == 4
        status, _ = post(base + "/dlq/purge", [("queue", "emails"), ("all", "1"),
                                               ("confirm", "yes")])
        assert status == 403  # no token, no purge


@needs_chromium
@BOTH_BACKENDS
def test_queues_and_dead_letters_on_both_backends(page: Page, client: Client,
                                                  backend: Backend) -> None:
    manager, viewer = app_manager(client)
    bury(manager.get_queue("emails"), 2)
    dead = bury(manager.get_queue("reports"), 5, "broken")  # over 3 partitions
    manager.get_queue("reports").add_batch([{"n": i} for i in range(7)])
    dlq = manager.dead_letter_queue
    with served(create_app(viewer)) as base:
        page.goto(base + "/")
        assert queues_table(page) == expected_queues(manager)
        assert queues_table(page)["reports"]["partitions"] == 3
        page.goto(base + "/dlq")
        assert number(page.inner_text("#dead-total")) == dlq.count() == 7
        job_id, error = next(iter(dead.items()))
        page.goto(base + f"/dlq/reports/{job_id}")
        expect(page.locator("#error")).to_have_text(f"ValueError: {error}")
        page.goto(base + "/dlq?queue=reports")
        page.click("#requeue-all")
        page.click("#confirm")
        expect(page.locator("#done")).to_have_text("requeued 5 jobs")
        assert dlq.count("reports") == 0
        assert manager.get_queue("reports").counts()["ready"] == 12


# -- the command and the escaping -------------------------------------------------------------


def test_pyqcore_web_serves_the_dashboard(redis_server: LocalRedis) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "pyqcore", "--url", redis_server.url, "--prefix", PREFIX, "web",
         "--port", str(port), "--read-only"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if process.poll() is not None:
            raise RuntimeError(process.communicate()[1])
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    try:
        wait_until(up, 20, "pyqcore web answered")
        with urllib.request.urlopen(base + "/", timeout=10) as response:
            text = response.read().decode()
        assert "<h1>Queues</h1>" in text and "read-only" in text
        status, _ = post(base + "/dlq/purge", [("queue", "emails"), ("all", "1")])
        assert status == 403
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=10)
    assert out.startswith(f"pyqcore web: {base}/ (Redis {redis_server.url}, prefix "
                          f"'{PREFIX}', read-only)"), out


def test_pyqcore_web_without_the_extra_says_what_to_install(
        redis_server: LocalRedis, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # `import uvicorn` fails
    result = CliRunner().invoke(cli, ["--url", redis_server.url, "web"])
    assert result.exit_code == 1
    assert result.stderr == ("pyqcore: the web dashboard needs pyqcore[web] "
                             "(pip install 'pyqcore[web]')\n")


def test_values_are_escaped_and_html_is_not() -> None:
    assert h("<td>{}</td>", '<script>"x"</script>') == \
        "<td>&lt;script&gt;&quot;x&quot;&lt;/script&gt;</td>"
    assert h("<p>{}</p>", h("<b>{}</b>", "&")) == "<p><b>&amp;</b></p>"
