"""The dashboard's HTML, rendered on the server from Python string templates: every value is
escaped on the way in (``h``) unless it is already ``Html``, so a payload, an error message or
a queue name is shown as text, never run. No template engine, no build step, no CDN: the CSS,
the few lines of JavaScript (refreshing the queues page, "select all") and the rate chart
(inline SVG drawn here) are all in this file.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import fields
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

from pyqcore.core.presence import WorkerInfo
from pyqcore.job import DeadLetterItem
from pyqcore.web.dashboard import COUNTERS, STATES, DeadPage, QueueRow

PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777",
           "#4b5563")


class Html(str):
    """Text that is already HTML: inserted as is by ``h``."""

    __slots__ = ()


def esc(value: object) -> Html:
    """``value`` as HTML: escaped (quotes too), unless it is ``Html`` already."""
    return value if isinstance(value, Html) else Html(html.escape(str(value), quote=True))


def h(template: str, *args: object, **kwargs: object) -> Html:
    """``template`` (trusted HTML) with its ``{}`` fields filled by the arguments, each
    escaped unless it is ``Html``."""
    return Html(template.format(*(esc(a) for a in args),
                                **{k: esc(v) for k, v in kwargs.items()}))


def join(parts: Iterable[object], sep: str = "") -> Html:
    return Html(sep.join(esc(p) for p in parts))


def number(n: int) -> str:
    return f"{n:,}"


def when(seconds: float | None) -> str:
    return "-" if seconds is None else f"{datetime.fromtimestamp(seconds):%Y-%m-%d %H:%M:%S}"


def ago(seconds: float, now: float) -> str:
    """How long before ``now`` (the server's time) ``seconds`` (since the epoch) was, roughly."""
    past = max(0.0, now - seconds)
    if past < 120:
        return f"{past:.0f} s ago"
    return f"{past / 60:.0f} min ago" if past < 7200 else f"{past / 3600:.1f} h ago"


def clip(value: str, width: int = 120) -> str:
    value = " ".join(value.split())
    return value if len(value) <= width else value[: width - 1] + "…"


def shown(value: Any) -> str:
    """A payload or a context, readable: JSON when it is JSON-like, else its repr."""
    try:
        return json.dumps(value, indent=2, ensure_ascii=False, default=repr)
    except (TypeError, ValueError):
        return repr(value)


def job_url(queue: str, job_id: str) -> str:
    return f"/dlq/{quote(queue, safe='')}/{quote(job_id, safe='')}"


def url(path: str, **params: object) -> str:
    given = {k: v for k, v in params.items() if v not in (None, "", 0)}
    return path + ("?" + urlencode(given) if given else "")


# -- the frame ----------------------------------------------------------------------------------

STYLE = Html("""
:root { --fg: #111827; --muted: #6b7280; --line: #e5e7eb; --accent: #2563eb; --bad: #b91c1c; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       margin: 0; background: #f9fafb; }
header { display: flex; gap: 1.5rem; align-items: baseline; padding: .7rem 1.5rem;
         background: #111827; color: #f9fafb; }
header a { color: #d1d5db; text-decoration: none; }
header a.active, header a:hover { color: #fff; text-decoration: underline; }
header .brand { font-weight: 700; color: #fff; }
header .mode { margin-left: auto; font-size: 12px; color: #fbbf24; }
main { padding: 1rem 1.5rem 3rem; max-width: 1200px; }
h1 { font-size: 1.3rem; margin: .4rem 0 1rem; }
h2 { font-size: 1.05rem; margin: 1.5rem 0 .5rem; }
table { border-collapse: collapse; background: #fff; border: 1px solid var(--line); }
th, td { padding: .35rem .6rem; border-bottom: 1px solid var(--line); text-align: left;
         vertical-align: top; }
th { font-size: 12px; color: var(--muted); font-weight: 600; background: #f3f4f6; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
td.t { white-space: nowrap; }
td.mono, pre, code { font-family: ui-monospace, SFMono-Regular, Menlo, monospace;
                     font-size: 12.5px; }
pre { background: #fff; border: 1px solid var(--line); padding: .7rem; overflow: auto;
      white-space: pre-wrap; word-break: break-word; max-height: 30rem; }
.muted { color: var(--muted); }
.note { padding: .6rem .8rem; background: #ecfdf5; border: 1px solid #a7f3d0; margin: .5rem 0; }
.error { padding: .6rem .8rem; background: #fef2f2; border: 1px solid #fecaca; color: var(--bad);
         margin: .5rem 0; }
.warn { padding: .6rem .8rem; background: #fffbeb; border: 1px solid #fde68a; margin: .5rem 0; }
form.inline { display: inline; }
button { font: inherit; padding: .3rem .8rem; border: 1px solid #9ca3af; background: #fff;
         border-radius: 4px; cursor: pointer; }
button.danger { border-color: var(--bad); color: var(--bad); }
button.primary { border-color: var(--accent); background: var(--accent); color: #fff; }
input[type=text], input[type=password], select { font: inherit; padding: .25rem .4rem; }
.bar { display: flex; gap: .6rem; align-items: center; flex-wrap: wrap; margin: .6rem 0; }
dl.fields { display: grid; grid-template-columns: max-content 1fr; gap: .25rem 1rem; }
dl.fields dt { color: var(--muted); }
dl.fields dd { margin: 0; }
.legend { display: flex; gap: 1rem; flex-wrap: wrap; margin: .3rem 0; font-size: 13px; }
.swatch { display: inline-block; width: .8rem; height: .8rem; margin-right: .3rem;
          vertical-align: -1px; border-radius: 2px; }
svg text { font: 11px system-ui, sans-serif; fill: #6b7280; }
""")

SELECT_ALL_JS = Html("""
document.querySelectorAll('input[data-select-all]').forEach(function (box) {
  box.addEventListener('change', function () {
    document.querySelectorAll('input[name=job]').forEach(function (b) { b.checked = box.checked; });
  });
});
""")

REFRESH_JS = Html("""
(function () {
  var live = document.getElementById('live');
  var every = 1000 * Number(live.dataset.refresh);
  function refresh() {
    fetch('/partials/queues', {cache: 'no-store'}).then(function (r) {
      if (!r.ok) { throw new Error('HTTP ' + r.status); }
      return r.text();
    }).then(function (text) { live.innerHTML = text; }, function (e) {
      var s = document.getElementById('stale');
      if (s) { s.textContent = 'refresh failed (' + e.message + '): showing older figures'; }
    });
  }
  setInterval(refresh, every);
})();
""")


NO_SCRIPT = Html("")


def post_button(action: str, fields_: Sequence[tuple[str, str]], label: str, id_: str,
                *, danger: bool = False) -> Html:
    """A form of one button that posts ``fields_`` to ``/dlq/<action>``."""
    hidden = join(h('<input type="hidden" name="{}" value="{}">', k, v) for k, v in fields_)
    return h('<form method="post" action="/dlq/{}" class="inline">{}<button type="submit" '
             'id="{}"{}>{}</button></form>', action, hidden, id_,
             Html(' class="danger"') if danger else NO_SCRIPT, label)


def layout(title: str, body: Html, *, active: str, prefix: str, read_only: bool,
           script: Html = NO_SCRIPT) -> Html:
    nav = join(h('<a href="{}" class="{}">{}</a>', href, "active" if key == active else "",
                 label)
               for key, href, label in (("queues", "/", "Queues"), ("workers", "/workers",
                                                                   "Workers"),
                                        ("dlq", "/dlq", "Dead letters")))
    mode = Html('<span class="mode">read-only</span>') if read_only else Html("")
    return h("""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">
<title>{title} · pyqcore</title><style>{style}</style></head>
<body><header><span class="brand">pyqcore</span><span class="muted">prefix {prefix}</span>
{nav}{mode}</header>
<main>{body}</main><script>{script}</script></body></html>
""", title=title, style=STYLE, prefix=prefix, nav=nav, mode=mode, body=body, script=script)


def message_page(title: str, text: str, *, prefix: str, read_only: bool,
                 active: str = "") -> Html:
    body = h('<h1>{}</h1><p class="error" id="message">{}</p>'
             '<p><a href="/">Back to the queues</a></p>', title, text)
    return layout(title, body, active=active, prefix=prefix, read_only=read_only)


# -- queues -------------------------------------------------------------------------------------


def queues_page(rows: Sequence[QueueRow], series: dict[str, list[tuple[float, float]]], *,
                window: float, refresh: float, prefix: str, read_only: bool,
                error: str | None = None) -> Html:
    body = h('<h1>Queues</h1><div id="live" data-refresh="{}">{}</div>', f"{refresh:g}",
             queues_live(rows, series, window=window, error=error))
    return layout("Queues", body, active="queues", prefix=prefix, read_only=read_only,
                  script=REFRESH_JS)


def queues_live(rows: Sequence[QueueRow], series: dict[str, list[tuple[float, float]]], *,
                window: float, error: str | None = None) -> Html:
    """The part of the queues page that refreshes itself: the table and the chart."""
    counters = list(COUNTERS) + sorted({k for r in rows for k in r.stats} - set(COUNTERS))
    head = join([Html("<th>queue</th><th class='n'>parts</th>"),
                 *(h('<th class="n">{}</th>', s) for s in STATES),
                 *(h('<th class="n" title="counter">{}</th>', "died" if c == "dead" else c)
                   for c in counters)])
    lines = []
    for r in rows:
        cells = [h('<td><a href="{}">{}</a></td>', url("/dlq", queue=r.name), r.name),
                 h('<td class="n" data-col="partitions">{}</td>', r.partitions)]
        cells += [h('<td class="n" data-col="{}"><b>{}</b></td>', s,
                    number(r.counts.get(s, 0))) for s in STATES]
        cells += [h('<td class="n" data-stat="{}">{}</td>', c, number(r.stats.get(c, 0)))
                  for c in counters]
        lines.append(h('<tr data-queue="{}">{}</tr>', r.name, join(cells)))
    if not lines:
        lines.append(h('<tr><td colspan="{}" class="muted">no queues yet</td></tr>',
                       6 + len(counters)))
    totals = {s: sum(r.counts.get(s, 0) for r in rows) for s in STATES}
    summary = join(h('<span>{}: <b id="total-{}">{}</b></span>', s, s, number(totals[s]))
                   for s in STATES)
    stamp = h('<span class="muted">as of {} (server time)</span> <span id="stale" '
              'class="muted"></span>', when(datetime.now().timestamp()))
    return h("""{error}<div class="bar">{summary}{stamp}</div>
<table id="queues"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<h2>Completed per second</h2>{chart}""",
             error=h('<p class="error">{}</p>', error) if error else Html(""), summary=summary,
             stamp=stamp, head=head, body=join(lines), chart=rate_chart(series, window))


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5 or 5 times a power of ten that is >= ``value`` (>= 1)."""
    if value <= 1:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 2.5, 5, 10) if step * power >= value)


def rate_chart(series: dict[str, list[tuple[float, float]]], window: float,
               width: int = 760, height: int = 220) -> Html:
    """An SVG line per queue: completed per second (y) over the last ``window`` seconds (x)."""
    drawn = {name: points for name, points in series.items() if points}
    if not drawn:
        return Html('<p class="muted" id="rate-chart-empty">collecting samples: the chart '
                    'starts after the second one.</p>')
    left, right, top, bottom = 48, 12, 10, 24
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = nice_ceiling(max(rate for points in drawn.values() for _, rate in points))

    def x(ago: float) -> float:
        return left + (1 - min(ago, window) / window) * plot_w

    def y(rate: float) -> float:
        return top + (1 - rate / peak) * plot_h

    parts = []
    for fraction in (0, 0.5, 1):
        at = y(peak * fraction)
        parts.append(h('<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="#e5e7eb"/>'
                       '<text x="{}" y="{}" text-anchor="end">{}</text>',
                       left, left + plot_w, f"{at:.1f}", f"{at:.1f}", left - 6,
                       f"{at + 4:.1f}", f"{peak * fraction:g}"))
    minutes = window / 60
    for fraction, label in ((1, f"-{minutes:g} min"), (0.5, f"-{minutes / 2:g} min"),
                            (0, "now")):
        parts.append(h('<text x="{}" y="{}" text-anchor="middle">{}</text>',
                       f"{x(window * fraction):.1f}", height - 6, label))
    legend = []
    for i, (name, points) in enumerate(sorted(drawn.items())):
        color = PALETTE[i % len(PALETTE)]
        coords = " ".join(f"{x(ago):.1f},{y(rate):.1f}" for ago, rate in points)
        parts.append(h('<polyline data-queue="{}" points="{}" fill="none" stroke="{}" '
                       'stroke-width="1.8"/>', name, coords, color))
        legend.append(h('<span><i class="swatch" style="background:{}"></i>{} '
                        '<b data-rate="{}">{}</b>/s</span>', color, name, name,
                        f"{points[-1][1]:,.1f}"))
    return h('<svg id="rate-chart" width="{w}" height="{hh}" viewBox="0 0 {w} {hh}" role="img" '
             'aria-label="completed jobs per second per queue" style="background:#fff;'
             'border:1px solid #e5e7eb">{parts}</svg><div class="legend">{legend}</div>',
             w=width, hh=height, parts=join(parts), legend=join(legend))


# -- workers ------------------------------------------------------------------------------------


def _cell(name: str, value: Any, now: float) -> Html:
    if isinstance(value, float) and name == "last_beat":
        return h('<td class="t" title="{}">{}</td>', when(value), ago(value, now))
    if isinstance(value, float) and name.endswith("_at"):
        return h('<td class="t">{} <span class="muted">({})</span></td>', when(value),
                 ago(value, now))
    if isinstance(value, int | float):
        return h('<td class="n">{}</td>', value)
    if isinstance(value, list | tuple):
        return h("<td>{}</td>", ", ".join(
            f"{v[0]} ({v[1]:g} s)" if isinstance(v, list | tuple) and len(v) == 2 and
            isinstance(v[1], int | float) else str(v) for v in value) or "-")
    return h("<td>{}</td>", value)


def _record(worker: WorkerInfo) -> dict[str, Any]:
    return {f.name: getattr(worker, f.name) for f in fields(worker)}


def workers_page(workers: list[WorkerInfo], *, now: float, prefix: str, read_only: bool
                 ) -> Html:
    if not workers:
        body = Html('<h1>Workers</h1><p class="muted" id="no-workers">no running workers.</p>')
    else:
        records = [_record(w) for w in workers]
        columns = list(dict.fromkeys(k for r in records for k in r))
        head = join(h("<th>{}</th>", c.replace("_", " ")) for c in columns)
        rows = join(h('<tr data-worker="{}">{}</tr>', r.get("id", ""),
                      join(_cell(c, r.get(c, ""), now) for c in columns)) for r in records)
        body = h('<h1>Workers</h1><p class="muted">{} running</p><table id="workers"><thead>'
                 '<tr>{}</tr></thead><tbody>{}</tbody></table>', len(records), head, rows)
    return layout("Workers", body, active="workers", prefix=prefix, read_only=read_only)


# -- dead letters -------------------------------------------------------------------------------


def dlq_page(page: DeadPage, *, queues: list[str], queue: str | None, queue_dead: int | None,
             done: str, prefix: str, read_only: bool) -> Html:
    options = join([h('<option value="">every queue</option>'),
                    *(h('<option value="{}"{}>{}</option>', q,
                        Html(" selected") if q == queue else Html(""), q) for q in queues)])
    search_form = h("""<form method="get" action="/dlq" class="bar" id="search">
<label>queue <select name="queue">{}</select></label>
<label>error contains <input type="text" name="q" value="{}" placeholder="type or message"></label>
<button type="submit">Search</button></form>""", options, page.search)
    parts = [h("<h1>Dead letters</h1>"), search_form]
    if done:
        parts.append(h('<p class="note" id="done">{}</p>', done))
    if page.search:
        parts.append(h('<p class="muted" id="summary">{} of {} dead jobs examined match '
                       '“{}”{}</p>', number(page.total), number(page.examined), page.search,
                       " (the search stopped there: narrow it with a queue)"
                       if page.truncated else ""))
    else:
        parts.append(h('<p class="muted" id="summary"><b id="dead-total">{}</b> dead jobs{}</p>',
                       number(page.total), f" in queue {queue}" if queue else ""))
    if not read_only and queue is not None and queue_dead:
        every = [("queue", queue), ("all", "1")]
        parts.append(h('<div class="bar">{}{}</div>',
                       post_button("requeue", every, f"Requeue all {number(queue_dead)} of "
                                   f"{queue}", "requeue-all"),
                       post_button("purge", every, f"Purge all {number(queue_dead)} of {queue}",
                                   "purge-all", danger=True)))
    select = Html("") if read_only else Html('<th><input type="checkbox" data-select-all '
                                             'title="select all"></th>')
    rows = []
    for item in page.items:
        error = f"{item.error.type}: {item.error.message}" if item.error else "-"
        payload = shown(item.payload) if item.record is None else f"<raw {item.record!r}>"
        key = f"{item.queue} {item.job_id}"
        box = Html("") if read_only else h('<td><input type="checkbox" name="job" value="{}">'
                                           "</td>", key)
        rows.append(h('<tr data-job="{}">{}<td>{}</td><td class="mono"><a href="{}">{}</a></td>'
                      '<td class="t">{}</td><td class="n">{}</td><td class="n">{}</td>'
                      '<td class="error-text">{}</td><td class="mono payload">{}</td></tr>',
                      key, box, item.queue, job_url(item.queue, item.job_id), item.job_id,
                      when(item.failed_at), item.attempts, item.redrives, clip(error),
                      clip(payload)))
    table = h('<table id="dead"><thead><tr>{}<th>queue</th><th>id</th><th>died</th>'
              '<th class="n">attempts</th><th class="n">redrives</th><th>error</th>'
              '<th>payload</th></tr></thead><tbody>{}</tbody></table>', select,
              join(rows) if rows else Html('<tr><td colspan="8" class="muted">no dead jobs'
                                           "</td></tr>"))
    if read_only or not rows:
        parts.append(table)
    else:
        parts.append(h("""<form method="post" action="/dlq/requeue" id="selected">{}
<div class="bar"><button type="submit" id="requeue-selected">Requeue selected</button>
<button type="submit" formaction="/dlq/purge" class="danger" id="purge-selected">
Purge selected</button></div>
</form>""", table))
    pager = []
    here = {"queue": queue, "q": page.search}
    if page.offset > 0:
        pager.append(h('<a href="{}" id="newer">← previous {}</a>',
                       url("/dlq", **here, offset=max(0, page.offset - page.limit)),
                       page.limit))
    if page.offset + len(page.items) < page.total:
        pager.append(h('<span class="muted">{} to {} of {}</span> <a href="{}" id="older">next {} '
                       "→</a>", page.offset + 1, page.offset + len(page.items),
                       number(page.total), url("/dlq", **here, offset=page.offset + page.limit),
                       page.limit))
    parts.append(h('<div class="bar">{}</div>', join(pager, " ")))
    return layout("Dead letters", join(parts), active="dlq", prefix=prefix, read_only=read_only,
                  script=SELECT_ALL_JS)


def job_page(item: DeadLetterItem, *, prefix: str, read_only: bool) -> Html:
    facts = [("queue", h('<a href="{}">{}</a>', url("/dlq", queue=item.queue), item.queue)),
             ("id", h('<code id="job-id">{}</code>', item.job_id)),
             ("partition", item.partition), ("died", when(item.failed_at)),
             ("enqueued", when(item.enqueued_at)), ("attempts", item.attempts),
             ("redrives", item.redrives)]
    dl = join(h("<dt>{}</dt><dd>{}</dd>", k, v) for k, v in facts)
    if item.record is None:
        payload = h('<h2>Payload</h2><pre id="payload">{}</pre><h2>Context</h2>'
                    '<pre id="context">{}</pre>', shown(item.payload), shown(item.context))
    else:
        payload = h('<h2>Record (undecodable)</h2><pre id="payload">{}</pre>', repr(item.record))
    if item.error is None:
        error = Html('<h2>Error</h2><p class="muted">none recorded</p>')
    else:
        error = h('<h2>Error</h2><p id="error"><b>{}</b>: {}</p><pre id="traceback">{}</pre>',
                  item.error.type, item.error.message, item.error.traceback or "(no traceback)")
    key = f"{item.queue} {item.job_id}"
    actions = NO_SCRIPT if read_only else h(
        '<div class="bar">{}{}</div>', post_button("requeue", [("job", key)], "Requeue",
                                                   "requeue-job"),
        post_button("purge", [("job", key)], "Purge", "purge-job", danger=True))
    body = h('<h1>Dead job</h1><dl class="fields">{}</dl>{}{}{}', dl, actions, payload, error)
    return layout(f"Dead job {item.job_id}", body, active="dlq", prefix=prefix,
                  read_only=read_only)


def confirm_page(action: str, what: str, fields_: list[tuple[str, str]], *, ids: list[str],
                 need_token: bool, back: str, prefix: str, read_only: bool,
                 error: str = "") -> Html:
    """The confirmation step of a requeue or a purge: what it will do, and the form that does
    it (the same fields, with confirm=yes, and the token if one is required)."""
    hidden = join(h('<input type="hidden" name="{}" value="{}">', k, v) for k, v in fields_)
    listed = join(h("<li><code>{}</code></li>", i) for i in ids[:50])
    more = h("<li>… and {} more</li>", len(ids) - 50) if len(ids) > 50 else Html("")
    token = h('<label>token <input type="password" name="token" id="token" '
              'autocomplete="off" required></label>') if need_token else Html("")
    verb = "Requeue" if action == "requeue" else "Purge"
    consequence = ("They go back to ready, their attempts reset." if action == "requeue" else
                   "They are deleted for good.")
    body = h("""<h1>{verb}?</h1>{error}<p id="question">{verb} {what}? {consequence}</p>
<ul>{listed}{more}</ul>
<form method="post" action="/dlq/{action}" class="bar">{hidden}
<input type="hidden" name="confirm" value="yes">{token}
<button type="submit" class="{cls}" id="confirm">{verb}</button>
<a href="{back}" id="cancel">Cancel</a></form>""",
             verb=verb, error=h('<p class="error" id="message">{}</p>', error) if error else
             Html(""), what=what, consequence=consequence, listed=listed, more=more,
             action=action, hidden=hidden, token=token,
             cls="primary" if action == "requeue" else "danger", back=back)
    return layout(f"{verb}?", body, active="dlq", prefix=prefix, read_only=read_only)
