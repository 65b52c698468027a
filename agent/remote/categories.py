"""The categories the Studio API lists samples by: a fact of the service, apart from the
client so that building the command line (``--category`` choices) loads no HTTP client."""

from __future__ import annotations

LIST_CATEGORIES = ("training", "testing", "validation", "post-processing", "anomaly", "all")
