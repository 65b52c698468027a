"""Power cuts: the queue and every folder on a file system that forgets the unsynced.

    python bench/powercut.py                          # 50 cuts over 2,000 files (root)
    python bench/powercut.py --files 100 --kills 5    # a quick look

Needs root, /dev/fuse, libfuse2 and fusepy (the ``dev`` extra). The queue, the three
watched folders (keep, delete, move) and the move target are on ``bench/powerfs.py``.
At each of the cuts the agent is killed with SIGKILL and the file system reverts to what
was synced (see powerfs for the model); the agent restarts on what survived. The server
fails 5 % of requests, drops 2 % of connections and loses 2 % of replies after storing.
Checked after every cut and at the end: no file the device finished writing is lost,
no name is stored twice, ``PRAGMA integrity_check`` of the queue is ``ok``. Printed as
``bench/crashstorm.py`` prints, plus the metadata-journal entries each cut kept.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from crashstorm import arguments, report, scenario
from storm import Storm


def main() -> int:
    args = arguments(2_000, 50).parse_args()
    sc = scenario(args, power=True)
    with tempfile.TemporaryDirectory(prefix="powercut-") as tmp:
        result = Storm(sc, args.work or Path(tmp)).run()
    report(f"power cuts ({sc.model} model)", sc, result)
    kept = [e.split() for e in result.kept_entries if e.startswith("ok")]
    print(
        f"  uncommitted names at the cuts: {sum(int(t) for _, _, t in kept)}, "
        f"of which kept {sum(int(k) for _, k, _ in kept)}"
    )
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
