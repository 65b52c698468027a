"""The categories the Studio API lists samples by, and the page size it is asked for: facts
of the service, apart from the client so that building the command line (``--category``
choices, ``--page-size``'s default) loads no HTTP client."""

from __future__ import annotations

LIST_CATEGORIES = ("training", "testing", "validation", "post-processing", "anomaly", "all")

PAGE_SIZE = 100
"""Samples per listing request (the service's largest allowed page is not documented)."""
