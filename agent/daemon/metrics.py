"""Prometheus metrics (text exposition format 0.0.4) from the event counters and the queue.

Counters come from ``events.Stats`` (since the process started; a reload keeps
them), gauges from the queue and the disk guard at scrape time. Names are part of the
contract for dashboards: only ever add, never rename.

A file the service already had ("already exists") is done, and its queue row is
``delivered``, but it is counted in ``files_duplicate_total``, not in
``files_delivered_total``: delivered + duplicate is every file done. ``queue_depth`` counts
every row the queue keeps, delivered ones included (nothing is deleted on dequeue), so it
only grows; the backlog is ``queue_backlog``. The ``process_*`` metrics carry no
``edge_uploader_`` prefix: they are the standard ones of the Prometheus client libraries.

=============================================  =========  ======================================
metric                                         type       meaning
=============================================  =========  ======================================
edge_uploader_files_seen_total                 counter    files a source noticed
edge_uploader_files_enqueued_total             counter    recorded in the queue for upload
edge_uploader_files_delivered_total            counter    stored by the service as new samples
edge_uploader_files_duplicate_total            counter    the service had them already (done)
edge_uploader_upload_retries_total             counter    transient failures, tried again later
edge_uploader_files_dead_total                 counter    permanently refused (dead letters)
edge_uploader_files_held_total                 counter    held back: unusable sidecar/metadata
edge_uploader_files_skipped_total              counter    not samples (empty, vanished, ...)
edge_uploader_files_gone_total                 counter    vanished or changed before sending
edge_uploader_bytes_sent_total                 counter    bytes of delivered and duplicate files
edge_uploader_queue_depth{state}               gauge      rows per queue state, all kept rows
edge_uploader_queue_backlog                    gauge      files pending or being sent
edge_uploader_oldest_pending_age_seconds       gauge      age of the oldest undelivered file
edge_uploader_last_delivery_timestamp_seconds  gauge      Unix time of the last delivery
edge_uploader_upload_latency_seconds           histogram  time per upload request
edge_uploader_uploads_in_flight                gauge      requests being sent now
edge_uploader_uploads_paused                   gauge      1 while the service refuses the key
edge_uploader_upload_concurrency_limit         gauge      requests allowed in flight now
edge_uploader_upload_rtt_seconds               gauge      mean round trip of recent requests
edge_uploader_upload_outage                    gauge      1 while the breaker holds delivery
edge_uploader_upload_window_open               gauge      0 outside the upload windows
edge_uploader_upload_bandwidth_cap_bytes       gauge      bytes/s cap on uploads (0: none)
edge_uploader_data_budget_bytes                gauge      max_bytes_per_day (with a budget)
edge_uploader_data_budget_used_bytes           gauge      bytes sent today (with a budget)
edge_uploader_data_budget_spent                gauge      1 while today's budget is spent
edge_uploader_captures_allowed                 gauge      0 while below the free-space floor
edge_uploader_disk_free_bytes{path}            gauge      free space per watched file system
edge_uploader_disk_floor_bytes{path}           gauge      the configured floor there
edge_uploader_healthy                          gauge      1 when /healthz answers 200
edge_uploader_info{version}                    gauge      always 1
process_cpu_seconds_total                      counter    user + system CPU time
process_resident_memory_bytes                  gauge      resident memory
process_virtual_memory_bytes                   gauge      virtual memory
process_open_fds                               gauge      open file descriptors
process_max_fds                                gauge      their limit (RLIMIT_NOFILE)
process_start_time_seconds                     gauge      Unix time the process started
=============================================  =========  ======================================
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from .. import __version__
from ..config.link import local_day, window_state
from ..core.delivery import Delivery
from . import process
from .health import Vitals, assess

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_COUNTERS = (
    ("files_seen_total", "seen", "Files a source noticed."),
    ("files_enqueued_total", "queued", "Files recorded in the queue for upload."),
    (
        "files_delivered_total",
        "delivered",
        "Files the ingestion service stored as new samples (duplicates are not counted here).",
    ),
    (
        "files_duplicate_total",
        "duplicate",
        "Files the service already had: done, not in files_delivered_total.",
    ),
    ("upload_retries_total", "retry", "Transient upload failures, tried again later."),
    ("files_dead_total", "dead", "Files permanently refused (dead letters)."),
    ("files_held_total", "held", "Files held back: their sidecar or metadata is unusable."),
    ("files_skipped_total", "skipped", "Files that are not samples (empty, vanished, ...)."),
    ("files_gone_total", "gone", "Files that vanished or changed before they were sent."),
)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def metric(self, name: str, kind: str, help_text: str,
               samples: Iterable[tuple[str, float]], *, prefix: str = "edge_uploader_",
               ) -> None:  # fmt: skip
        full = f"{prefix}{name}"
        self.lines.append(f"# HELP {full} {help_text}")
        self.lines.append(f"# TYPE {full} {kind}")
        for suffix, value in samples:
            self.lines.append(f"{full}{suffix} {_num(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render(service: Vitals, *, now: float | None = None) -> str:
    """The ``/metrics`` page for a running daemon."""
    now = time.time() if now is None else now
    stats = service.stats
    w = _Writer()
    snap = stats.snapshot()
    counts = snap["counts"]
    for name, event, help_text in _COUNTERS:
        w.metric(name, "counter", help_text, [("", counts.get(event, 0))])
    w.metric("bytes_sent_total", "counter", "Bytes of files done (delivered and duplicate).",
             [("", snap["bytes_sent"])])  # fmt: skip

    queue = service.queue
    if queue is not None:
        depth = queue.counts()
        w.metric("queue_depth", "gauge",
                 "Queue rows per state, every row kept (delivered ones too): see queue_backlog.",
                 [(f'{{state="{s}"}}', n) for s, n in depth.items()])  # fmt: skip
        w.metric("queue_backlog", "gauge", "Files waiting to be sent or being sent.",
                 [("", depth.get("pending", 0) + depth.get("uploading", 0))])  # fmt: skip
        oldest = queue.oldest_pending()
        w.metric("oldest_pending_age_seconds", "gauge",
                 "Age of the oldest file not yet delivered (0 when none).",
                 [("", round(max(0.0, now - oldest), 3) if oldest else 0.0)])  # fmt: skip
    if snap["last_delivery_at"] is not None:
        w.metric("last_delivery_timestamp_seconds", "gauge",
                 "Unix time of the last delivery since start.",
                 [("", round(snap["last_delivery_at"], 3))])  # fmt: skip

    buckets = dict(stats.latency_buckets)
    samples: list[tuple[str, float]] = [
        (f'_bucket{{le="{_num(float(b))}"}}', n) for b, n in sorted(buckets.items())
    ]
    samples.append(('_bucket{le="+Inf"}', stats.latency_count))
    samples.append(("_sum", round(stats.latency_sum, 6)))
    samples.append(("_count", stats.latency_count))
    w.metric("upload_latency_seconds", "histogram", "Time per upload request.", samples)

    if service.delivery is not None:
        _delivery(w, service.delivery)

    disk = service.disk
    if disk is not None:
        states = disk.states()
        paths = [f'{{path="{_label(str(s.path))}"}}' for s in states]
        w.metric("captures_allowed", "gauge", "0 while a file system is below the floor.",
                 [("", 0 if any(s.low for s in states) else 1)])  # fmt: skip
        w.metric("disk_free_bytes", "gauge", "Free space per capture or queue file system.",
                 [(p, s.free_bytes) for p, s in zip(paths, states, strict=True)])  # fmt: skip
        w.metric("disk_floor_bytes", "gauge", "The configured free-space floor.",
                 [(p, s.floor_bytes) for p, s in zip(paths, states, strict=True)])  # fmt: skip

    w.metric("healthy", "gauge", "1 when /healthz answers 200.",
             [("", 1 if assess(service).healthy else 0)])  # fmt: skip
    w.metric("info", "gauge", "The running version.",
             [(f'{{version="{_label(__version__)}"}}', 1)])  # fmt: skip
    _process(w)
    return w.text()


def _process(w: _Writer) -> None:
    """The standard ``process_*`` metrics, where ``/proc`` is readable."""
    p = process.read()
    if p is None:
        return
    for name, kind, help_text, value in (
        ("cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.",
         round(p.cpu_seconds, 3)),
        ("resident_memory_bytes", "gauge", "Resident memory size in bytes.", p.resident_bytes),
        ("virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", p.virtual_bytes),
        ("open_fds", "gauge", "Number of open file descriptors.", p.open_fds),
        ("max_fds", "gauge", "Maximum number of open file descriptors.", p.max_fds),
        ("start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.",
         round(p.start_time, 2)),
    ):  # fmt: skip
        w.metric(name, kind, help_text, [("", value)], prefix="process_")


def _delivery(w: _Writer, delivery: Delivery) -> None:
    w.metric("uploads_in_flight", "gauge", "Upload requests being sent now.",
             [("", delivery.inflight)])  # fmt: skip
    w.metric("uploads_paused", "gauge", "1 while the service refuses the key or URL.",
             [("", 1 if delivery.paused else 0)])  # fmt: skip
    c = delivery.concurrency
    w.metric("upload_concurrency_limit", "gauge",
             "Upload requests allowed in flight now (adaptive or fixed).",
             [("", c.limit)])  # fmt: skip
    if c.rtt is not None:
        w.metric("upload_rtt_seconds", "gauge",
                 "Mean round-trip time of recent upload requests.",
                 [("", round(c.rtt, 6))])  # fmt: skip
    w.metric("upload_outage", "gauge",
             "1 while repeated failures hold delivery behind one probe.",
             [("", 1 if delivery.state.outage else 0)])  # fmt: skip
    _metered(w, delivery)


def _metered(w: _Writer, delivery: Delivery) -> None:
    link, now = delivery.config.link, time.time()
    is_open = delivery.meter.override or window_state(link.upload_windows, now).open
    w.metric("upload_window_open", "gauge", "0 outside the upload windows (nothing is sent).",
             [("", 1 if is_open else 0)])  # fmt: skip
    w.metric("upload_bandwidth_cap_bytes", "gauge",
             "The cap on upload bandwidth in bytes per second (0: none).",
             [("", link.max_bytes_per_second)])  # fmt: skip
    if link.max_bytes_per_day:
        used = delivery.queue.bytes_sent_on(local_day(now))
        w.metric("data_budget_bytes", "gauge", "The daily data budget (max_bytes_per_day).",
                 [("", link.max_bytes_per_day)])  # fmt: skip
        w.metric("data_budget_used_bytes", "gauge", "Bytes of files sent today (local time).",
                 [("", used)])  # fmt: skip
        w.metric("data_budget_spent", "gauge", "1 while today's data budget is spent.",
                 [("", 1 if used >= link.max_bytes_per_day else 0)])  # fmt: skip
