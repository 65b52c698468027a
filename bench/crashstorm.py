"""Crash storm: kill -9 at random moments while files arrive, against a faulty server.

    python bench/crashstorm.py                          # 100 kills over 10,000 files
    python bench/crashstorm.py --files 500 --kills 10   # a quick look

The server fails 5 % of upload requests (500), drops 2 % of connections without an answer
and loses 2 % of replies after storing the sample. Each kill is followed by a restart on
the same queue; a last agent drains what is left. Printed: files written, kills, files
stored at the server, lost (written but neither on disk nor stored), stored twice, queue
integrity and the final rows by state. Exit status 1 when any invariant broke.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from storm import Result, Scenario, Storm


def report(title: str, sc: Scenario, r: Result) -> None:
    faults = f"fail {sc.fail_rate:.0%} drop {sc.drop_rate:.0%} lost reply {sc.lose_rate:.0%}"
    print(f"{title}: {sc.kills} kills over {sc.files} files, seed {sc.seed}, faults {faults}")
    integrity = "ok" if not r.integrity else "; ".join(r.integrity)
    print(
        f"  written {r.written}  kills {r.kills}  stored {r.stored}  lost {len(r.lost)}  "
        f"stored twice {len(r.stored_twice)}  refused as duplicates {r.refused}  "
        f"integrity {integrity}"
    )
    print(f"  final rows {r.rows}  wall {r.seconds:.0f} s  {'PASS' if r.ok else 'FAIL'}")


def arguments(files: int, kills: int) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=files)
    ap.add_argument("--kills", type=int, default=kills)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--fail-rate", type=float, default=0.05)
    ap.add_argument("--drop-rate", type=float, default=0.02)
    ap.add_argument("--lose-reply-rate", type=float, default=0.02)
    ap.add_argument("--model", choices=("ext4", "posix"), default="ext4",
                    help="power cuts: the file system model (see bench/powerfs.py)")  # fmt: skip
    ap.add_argument("--work", type=Path, help="keep the run here (default: a temporary folder)")
    return ap


def scenario(args: argparse.Namespace, *, power: bool) -> Scenario:
    return Scenario(
        files=args.files, kills=args.kills, seed=args.seed, fail_rate=args.fail_rate,
        drop_rate=args.drop_rate, lose_rate=args.lose_reply_rate, power=power, model=args.model,
    )  # fmt: skip


def main() -> int:
    args = arguments(10_000, 100).parse_args()
    sc = scenario(args, power=False)
    with tempfile.TemporaryDirectory(prefix="crashstorm-") as tmp:
        result = Storm(sc, args.work or Path(tmp)).run()
    report("crash storm", sc, result)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
