"""The uploader against a hostile or broken server, over real sockets: each answer ends
within the timeout, memory stays bounded, nothing the service did not confirm is
delivered, and the reason says what the server did."""

from __future__ import annotations

import shutil
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge_uploader.remote.ingestion import (
    MAX_RESPONSE_BYTES,
    Answer,
    Outcome,
    Sample,
    Uploader,
    make_client,
)
from edge_uploader.remote.tls import client_context
from edge_uploader.remote.wire import Wire
from edge_uploader.secrets import Secret

from .server import Hostile, HostileServer, signed_certificate, wrong_host_certificate

KEY = "ei_hostile_test_key_0123456789"
TIMEOUT = 2.0


@pytest.fixture
def sample(tmp_path: Path) -> Sample:
    path = tmp_path / "idle.01.csv"
    path.write_text("t,v\n0,1\n")
    return Sample(path=path, file_name=path.name, category="training", label="idle",
                  metadata={})  # fmt: skip


@pytest.fixture
def serve() -> Iterator[Callable[..., HostileServer]]:
    started: list[HostileServer] = []

    def start(mode: str, **kw: object) -> HostileServer:
        host = str(kw.pop("host", "127.0.0.1"))
        tls = kw.pop("tls", None)
        srv = HostileServer(Hostile(mode, **kw), host=host, tls=tls).start()  # type: ignore[arg-type]
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


@pytest.fixture(params=["httpx", "wire"])
def link(request: pytest.FixtureRequest) -> str:
    """Every hostile answer meets both ways a request goes: httpx (a proxied link) and
    the lean ``Wire`` (a direct one)."""
    return str(request.param)


def upload(url: str, sample: Sample, link: str, *, ca_file: Path | None = None,
           limit: float = TIMEOUT + 5) -> tuple[Answer, float]:  # fmt: skip
    """One upload in a thread, so a hang fails the test instead of blocking it."""
    if link == "wire":
        wire = Wire(url, timeout=TIMEOUT, connect_timeout=TIMEOUT,
                    tls=lambda: client_context(ca_file))  # fmt: skip
        uploader = Uploader(None, url, Secret(KEY), wire=wire)
    else:
        client = make_client(concurrency=1, timeout=TIMEOUT, connect_timeout=TIMEOUT,
                             ca_file=ca_file)  # fmt: skip
        uploader = Uploader(client, url, Secret(KEY))
    got: list[Answer] = []
    start = time.monotonic()
    worker = threading.Thread(target=lambda: got.append(uploader.upload(sample)), daemon=True)
    worker.start()
    worker.join(limit)
    elapsed = time.monotonic() - start
    assert got, f"the upload hung for more than {limit} s"
    uploader.close()
    return got[0], elapsed


def test_the_control_answer_is_delivered(link: str, serve: Callable[..., HostileServer],
                                         sample: Sample) -> None:  # fmt: skip
    answer, _ = upload(serve("ok").url, sample, link)
    assert (answer.outcome, answer.sample_id) == (Outcome.DELIVERED, 7)


def test_a_dripping_answer_is_cut_at_the_timeout(link: str, serve: Callable[..., HostileServer],
                                                 sample: Sample) -> None:  # fmt: skip
    """One byte every 0.2 s never trips the per-read timeout; the answer's deadline does."""
    srv = serve("drip", drip_seconds=0.2)
    answer, elapsed = upload(srv.url, sample, link)
    assert answer.outcome is Outcome.RETRY and answer.timed_out
    assert answer.reason == f"timed out: the answer did not arrive whole within {TIMEOUT:g} s"
    assert elapsed < TIMEOUT + 1.5
    assert srv.state.sent_bytes > 0  # it was dripping, not silent


def test_a_100_mb_answer_is_not_read_and_memory_stays_bounded(
    link: str, serve: Callable[..., HostileServer], sample: Sample
) -> None:
    srv = serve("huge")
    tracemalloc.start()
    try:
        answer, _ = upload(srv.url, sample, link)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert answer.outcome is Outcome.RETRY
    assert answer.reason == "the service's answer was over 1024 KiB: not read"
    assert peak < 4 * MAX_RESPONSE_BYTES, f"peak {peak} bytes"
    assert srv.state.sent_bytes < 20 * MAX_RESPONSE_BYTES  # the client hung up early


@pytest.mark.parametrize(("mode", "outcome", "reason"), [
    ("not-json", Outcome.RETRY, "the service answered 200 without a JSON body"),
    ("no-files", Outcome.RETRY, "the service listed no files in its answer"),
    ("success-false", Outcome.DEAD, "the service answered 200 with success: false and no reason"),
    ("retry-after", Outcome.RETRY,
     "HTTP 503: busy (Retry-After 999999 s: waiting 3600 s, the longest the agent waits)"),
])  # fmt: skip
def test_broken_answers_are_not_delivered_and_say_why(link: str,
    serve: Callable[..., HostileServer], sample: Sample, mode: str, outcome: Outcome,
    reason: str,
) -> None:  # fmt: skip
    answer, elapsed = upload(serve(mode).url, sample, link)
    assert (answer.outcome, answer.reason) == (outcome, reason)
    assert answer.sample_id is None and answer.bytes_sent == 0
    assert elapsed < TIMEOUT


def test_retry_after_999999_waits_at_most_the_cap() -> None:
    from edge_uploader.clock import RETRY_AFTER_CAP_SECONDS, retry_delay

    assert retry_delay(1, 1.0, 300.0, 999999.0) == RETRY_AFTER_CAP_SECONDS == 3600.0


@pytest.mark.parametrize("mode", ["sid-string", "sid-huge"])
def test_a_sample_id_that_is_not_one_is_not_kept(link: str,
    serve: Callable[..., HostileServer], sample: Sample, mode: str,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """The service said it stored the file (so it is delivered), but "4242" or 2^80 is not
    an id the queue can keep or the project can be asked about."""
    answer, _ = upload(serve(mode).url, sample, link)
    assert (answer.outcome, answer.sample_id) == (Outcome.DELIVERED, None)
    assert "is not a sample id" in caplog.text


def test_a_redirect_to_another_host_is_not_followed(
    link: str, serve: Callable[..., HostileServer], sample: Sample
) -> None:
    """The API key must not follow a redirect: the other host sees no request."""
    other = serve("ok", host="127.0.0.2")
    srv = serve("redirect", redirect_to=f"{other.url}/api/training/files")
    answer, _ = upload(srv.url, sample, link)
    assert answer.outcome is Outcome.PAUSE
    assert answer.reason == (f"HTTP 307 redirect to '{other.url}/api/training/files':"
                             " check the URL")  # fmt: skip
    assert (srv.state.requests, other.state.requests) == (1, 0)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_a_wrong_certificate_is_refused_and_named(
    link: str, serve: Callable[..., HostileServer], sample: Sample, tmp_path: Path
) -> None:
    ca, context = wrong_host_certificate(tmp_path)
    srv = serve("ok", tls=context)
    answer, elapsed = upload(srv.url, sample, link, ca_file=ca)
    assert answer.outcome is Outcome.RETRY and answer.sample_id is None
    assert "CERTIFICATE_VERIFY_FAILED" in answer.reason
    assert "127.0.0.1" in answer.reason  # the mismatch names the host
    assert srv.state.requests == 0 and elapsed < TIMEOUT


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_a_certificate_signed_by_the_configured_ca_file_is_trusted(
    link: str, serve: Callable[..., HostileServer], sample: Sample, tmp_path: Path
) -> None:
    ca, context = signed_certificate(tmp_path, "127.0.0.1", "IP:127.0.0.1")
    srv = serve("ok", tls=context)
    answer, _ = upload(srv.url, sample, link, ca_file=ca)
    assert answer.outcome is Outcome.DELIVERED and srv.state.requests == 1
