"""Local ingestion server: an emulator of the Edge Impulse ingestion service and a
small part of the Studio API, for trying the agent without an account and for tests.

The public surface is re-exported here; the modules are ``server`` (HTTP, in-process
API), ``ingest`` (upload rules), ``multipart`` (streaming parser), ``store`` (data dir),
``studio`` (``/v1`` routes), ``faults`` (fault injection) and ``cli``.
"""

from .faults import FaultAction, FaultConfig
from .server import LocalIngestionServer
from .store import SampleRecord, SeedSample

__all__ = ["FaultAction", "FaultConfig", "LocalIngestionServer", "SampleRecord", "SeedSample"]
