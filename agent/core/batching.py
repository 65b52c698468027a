"""Several files per request: which leased rows may share one.

The service takes up to 1,000 files per request, all with the request's headers, so files
may share a request only when they agree on what the headers say: category, label (an
unset label is fine: the service names each file's label from its own file name),
metadata and duplicate handling. Files are grouped within ``max_files`` and ``max_bytes``,
whatever their size (a large file is streamed from disk inside the shared body, so memory
does not grow with it); a file with side parts (bounding boxes, an info file's labels), a
file whose last batch was refused as a whole, and a file over ``max_bytes`` go alone. The
derived ``captured_at`` makes every file's metadata unique: with it on
(``[tagging] captured_at``, the default) files group only when a layer sets it.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence

from ..store.queue import Row

Key = tuple[str, str | None, str, bool]


def _key(row: Row) -> Key:
    return (row.category, row.label, json.dumps(row.metadata, sort_keys=True),
            row.allow_duplicates)  # fmt: skip


def requests(rows: Sequence[Row], max_files: int, max_bytes: int,
             alone: Collection[int] = ()) -> list[list[Row]]:  # fmt: skip
    """``rows`` in requests, in order of each request's first row."""
    out: list[list[Row]] = []
    open_: dict[Key, tuple[list[Row], int]] = {}
    for row in rows:
        if max_files <= 1 or row.extra or row.id in alone or row.size > max_bytes:
            out.append([row])
            continue
        key = _key(row)
        group = open_.get(key)
        if group is not None and len(group[0]) < max_files and group[1] + row.size <= max_bytes:
            group[0].append(row)
            open_[key] = (group[0], group[1] + row.size)
            continue
        fresh = [row]
        out.append(fresh)
        open_[key] = (fresh, row.size)
    return out
