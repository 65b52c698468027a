"""Which proxy the environment names: read without ``urllib.request`` (a tenth of a
start-up), it must be exactly what ``urllib.request`` reads, which httpx uses."""

from __future__ import annotations

import os
import random
import urllib.request

import pytest

from edge_uploader.remote.proxy import proxies_from_environment, proxy_url

NAMES = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy",
         "NO_PROXY", "no_proxy", "Ftp_Proxy", "hTTp_pRoxy", "_PROXY", "_proxy", "PROXY",
         "X_PROXY", "REQUEST_METHOD", "PATH")  # fmt: skip


def test_the_proxies_read_are_urllibs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lower case wins over upper case, an empty lower-case value removes a proxy, and
    under CGI (``REQUEST_METHOD``) an upper-case ``HTTP_PROXY`` is ignored."""
    rng = random.Random(20261204)
    for _ in range(2000):
        env = {n: rng.choice(["", "http://p:3128", "q:8080"])
               for n in rng.sample(NAMES, rng.randint(0, len(NAMES)))}  # fmt: skip
        monkeypatch.setattr(os, "environ", env)
        assert proxies_from_environment(env) == urllib.request.getproxies_environment(), env


def test_no_proxy_sends_a_host_direct(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("https_proxy", "proxy.site.lan:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,.site.lan")
    assert proxy_url("https://ingestion.example") == "http://proxy.site.lan:3128"
    assert proxy_url("https://db.site.lan") is None
