"""The local status page (``GET /`` on ``[http] listen``): one self-contained HTML page for
the technician on site, read on a phone.

The page holds no data itself: its script asks ``/status.json`` (the ``status --json``
document, from ``store.status.gather``) every few seconds and fills the page with
``textContent`` only, so a file name such as ``<img src=x onerror=alert(1)>.wav`` is shown
as text and never becomes markup. Nothing is loaded from elsewhere (inline CSS and
script); the Content-Security-Policy allows exactly this script and style (by hash) and
requests to the agent itself, so even injected markup could not run or call out.
"""

from __future__ import annotations

import base64
import hashlib

REFRESH_SECONDS = 5

_STYLE = """
:root { font: 15px/1.4 system-ui, sans-serif; color: #1b1f24; background: #f4f5f7; }
body { margin: 0 auto; max-width: 70rem; padding: 0.75rem; }
h1 { font-size: 1.25rem; margin: 0 0 0.25rem; }
h2 { font-size: 1rem; margin: 1.25rem 0 0.4rem; }
#conn { color: #57606a; margin: 0 0 0.5rem; }
#conn.bad { color: #b42318; font-weight: 600; }
#alerts p { background: #fdecea; color: #7a1a12; border-radius: 6px; padding: 0.5rem;
  margin: 0.3rem 0; font-weight: 600; }
.tiles { display: grid; gap: 0.5rem; grid-template-columns: repeat(auto-fill, minmax(10rem, 1fr)); }
.tile { background: #fff; border-radius: 8px; padding: 0.5rem 0.7rem; }
.tile span { display: block; color: #57606a; font-size: 0.8rem; }
.tile b { font-size: 1.2rem; }
.cols { display: grid; gap: 0 1.5rem; grid-template-columns: 1fr 1fr; }
.wrap { overflow-x: auto; background: #fff; border-radius: 8px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 0.3rem 0.5rem; border-bottom: 1px solid #e4e7eb;
  vertical-align: top; }
th { font-size: 0.8rem; color: #57606a; font-weight: 600; }
td.path { word-break: break-all; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.none { color: #57606a; padding: 0.3rem 0.5rem; margin: 0; }
@media (max-width: 600px) { .cols { grid-template-columns: 1fr; } }
"""

_SCRIPT = """
"use strict";
const REFRESH_MS = @REFRESH_MS@;
const $ = (key) => document.querySelector('[data-k="' + key + '"]');
function show(key, text, raw) {
  const el = $(key);
  el.textContent = text;
  if (raw !== undefined) el.dataset.v = raw === null ? "" : String(raw);
}
function bytes(n) {
  const units = ["B", "kB", "MB", "GB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return i === 0 ? n + " B" : n.toFixed(1) + " " + units[i];
}
function clock(ts) {
  if (ts === null || ts === undefined) return "\\u2013";
  const d = new Date(ts * 1000), now = new Date();
  const t = d.toLocaleTimeString([], {hour: "2-digit", minute: "2-digit"});
  return d.toDateString() === now.toDateString() ? t : d.toLocaleDateString() + " " + t;
}
function table(id, items, cols) {
  const trs = items.map((item) => {
    const tr = document.createElement("tr");
    for (const [cls, get] of cols) {
      const td = document.createElement("td");
      td.className = cls;
      const value = get(item);
      td.textContent = value === null || value === undefined ? "\\u2013" : String(value);
      tr.appendChild(td);
    }
    return tr;
  });
  document.getElementById(id).replaceChildren(...trs);
  document.getElementById(id + "-none").hidden = items.length > 0;
}
function windowText(w) {
  if (!w) return ["no upload windows: always open", null];
  if (w.override) return ["retry-now: open until the agent stops", null];
  if (w.open) return [w.closes_at ? "open until " + clock(w.closes_at) : "open", null];
  return ["closed, opens " + clock(w.next_open_at), w.next_open_at];
}
function alerts(s) {
  const out = [];
  if (s.paused) out.push("Uploads paused: " + s.paused);
  if (s.concurrency && s.concurrency.outage) {
    out.push("The service does not answer: one probe at a time");
  }
  if (s.window && !s.window.open && !s.window.override) {
    out.push("Outside the upload windows: nothing is sent");
  }
  if (s.budget && s.budget.spent) {
    out.push("Today's data budget is spent: uploads wait until " + clock(s.budget.resets_at));
  }
  if (s.counts.dead) out.push(s.counts.dead + " dead letter(s): the service refused them");
  return out.map((text) => {
    const p = document.createElement("p");
    p.textContent = text;
    return p;
  });
}
function render(s) {
  const t = s.throughput, c = s.concurrency || {};
  document.getElementById("alerts").replaceChildren(...alerts(s));
  show("backlog", String(s.backlog), s.backlog);
  for (const k of ["pending", "uploading", "delivered", "dead", "held", "gone"]) {
    show("counts." + k, String(s.counts[k]), s.counts[k]);
  }
  show("rate", t.last_60s.files_per_second + " files/s", t.last_60s.files_per_second);
  show("last_900s", t.last_900s.files + " files, " + bytes(t.last_900s.bytes), t.last_900s.files);
  show("concurrency.limit", c.limit === undefined ? "\\u2013" : String(c.limit), c.limit);
  show("concurrency.rtt_ms", c.rtt_ms === undefined || c.rtt_ms === null ? "\\u2013"
    : Math.round(c.rtt_ms) + " ms", c.rtt_ms);
  const [wtext, wraw] = windowText(s.window);
  show("window", wtext, wraw);
  const b = s.budget;
  show("budget", b ? bytes(b.left_bytes) + " left of " + bytes(b.max_bytes_per_day)
    : "no daily budget", b ? b.left_bytes : null);
  const cap = s.max_bytes_per_second;
  show("cap", cap ? bytes(cap) + "/s" : "none", cap);
  show("last_error", s.last_error || "none");
  const watches = Object.entries(s.backlog_by_watch).map(([name, n]) => ({name, ...n}));
  table("by-watch", watches, [["path", (w) => w.name], ["num", (w) => w.pending],
    ["num", (w) => w.uploading], ["num", (w) => w.dead], ["num", (w) => w.held]]);
  table("recent", s.recent_deliveries, [["", (r) => clock(r.delivered_at)], ["path", (r) => r.path],
    ["num", (r) => r.sample_id], ["num", (r) => bytes(r.size)]]);
  table("dead", s.dead_letters, [["num", (r) => r.id], ["path", (r) => r.path],
    ["", (r) => r.reason], ["num", (r) => r.attempts]]);
  table("held", s.held, [["num", (r) => r.id], ["path", (r) => r.path], ["", (r) => r.reason]]);
}
async function refresh() {
  const conn = document.getElementById("conn");
  try {
    const answer = await fetch("status.json", {cache: "no-store"});
    const type = answer.headers.get("Content-Type") || "";
    const doc = type.startsWith("application/json") ? await answer.json() : {};
    if (!answer.ok) throw new Error(doc.error || ("HTTP " + answer.status));
    render(doc);
    conn.className = "";
    conn.textContent = "updated " + new Date(doc.generated_at * 1000).toLocaleTimeString();
    document.body.dataset.state = "ready";
  } catch (err) {
    conn.className = "bad";
    conn.textContent = "cannot read the agent's status (" + err.message + "); trying again";
  }
}
refresh();
setInterval(refresh, REFRESH_MS);
""".replace("@REFRESH_MS@", str(REFRESH_SECONDS * 1000))


def _tile(key: str, title: str) -> str:
    return f'<div class="tile"><span>{title}</span><b data-k="{key}">\u2013</b></div>'


def _list(id_: str, title: str, heads: list[tuple[str, str]], empty: str) -> str:
    cols = "".join(f'<th class="{cls}">{name}</th>' for name, cls in heads)
    return (f'<section><h2>{title}</h2><div class="wrap"><table><thead><tr>{cols}</tr>'
            f'</thead><tbody id="{id_}"></tbody></table><p class="none" id="{id_}-none">'
            f"{empty}</p></div></section>")  # fmt: skip


_TILES = [
    ("backlog", "backlog (to send)"), ("rate", "delivery rate, last minute"),
    ("last_900s", "delivered, last 15 min"), ("concurrency.limit", "requests in flight, limit"),
    ("concurrency.rtt_ms", "round trip"), ("window", "upload window"),
    ("budget", "data budget today"), ("cap", "bandwidth cap"),
]  # fmt: skip
_STATES = ["pending", "uploading", "delivered", "dead", "held", "gone"]
_NUM = "num"

_BODY = "".join([
    "<h1>edge-uploader</h1>",
    '<p id="conn">loading\u2026</p><div id="alerts"></div>',
    '<div class="tiles">', *(_tile(k, t) for k, t in _TILES), "</div>",
    '<h2>files by state</h2><div class="tiles">',
    *(_tile(f"counts.{s}", s) for s in _STATES), "</div>",
    '<div class="cols">',
    _list("by-watch", "backlog by watch", [("watch", ""), ("pending", _NUM),
          ("uploading", _NUM), ("dead", _NUM), ("held", _NUM)], "nothing waiting"),
    _list("recent", "last deliveries", [("at", ""), ("file", ""), ("sample id", _NUM),
          ("size", _NUM)], "none yet"),
    _list("dead", "dead letters (refused by the service)", [("#", _NUM), ("file", ""),
          ("reason", ""), ("tries", _NUM)], "none"),
    _list("held", "held files (sidecar or metadata to fix)", [("#", _NUM), ("file", ""),
          ("reason", "")], "none"),
    "</div>",
    '<h2>last transient error</h2><p class="none" data-k="last_error">\u2013</p>',
])  # fmt: skip

PAGE = (
    '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">\n'
    '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
    "<title>edge-uploader status</title>\n"
    f"<style>{_STYLE}</style></head>\n<body>{_BODY}\n<script>{_SCRIPT}</script>\n</body></html>\n"
).encode()
"""The page, the same bytes for every request."""


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; script-src {_hash(_SCRIPT)}; style-src {_hash(_STYLE)};"
    " connect-src 'self'; img-src 'none'; base-uri 'none'; form-action 'none';"
    " frame-ancestors 'none'"
)
"""Only this page's own script and style run; it may only ask the agent itself."""
