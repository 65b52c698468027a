"""How the agent verifies a TLS server, the same on every path: httpx and ``Wire`` must
trust exactly the same certificates."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ssl


def client_context(ca_file: Path | None) -> ssl.SSLContext:
    """A verifying context: the CAs in ``ca_file``; without it, as httpx trusts by default
    (``SSL_CERT_FILE`` or ``SSL_CERT_DIR`` if set, else certifi's bundle, else the system
    store). Host names are checked; reading a store costs tens of milliseconds, so it is
    made when the first TLS connection needs it."""
    import ssl

    if ca_file is not None:
        return ssl.create_default_context(cafile=str(ca_file))
    if os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    if os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
    try:
        import certifi
    except ImportError:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())
