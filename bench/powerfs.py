"""A FUSE file system that forgets what was not synced when the power is cut.

    python bench/powerfs.py STATE_DIR MOUNTPOINT [--seed N] [--model ext4|posix]

Every operation passes through to ``STATE_DIR/live``; what a power cut would keep is
tracked beside it, modelled on ext4 (``data=ordered``, the default on SD cards):

- A file's **content** (and size and mtime) is durable only at ``fsync``/``fdatasync``
  of that file; a file never synced comes back empty, one synced and then rewritten
  comes back as it was at its last sync.
- **Names** (create, mkdir, rename, unlink, rmdir, symlink) go into one ordered metadata
  journal. Any ``fsync`` (of a file or a directory) commits the whole journal, as ext4's
  commit of the running transaction does; at a cut, a random prefix of what was not
  committed survives (the journal also commits on its own timer), never a later entry
  without the earlier ones.
- ``--model posix`` is stricter, what POSIX promises and what file systems without a
  journal (FAT on an SD card) come close to: a name change is committed only by an
  ``fsync`` of the folder it is in, and a rename between two folders is two changes (gone
  from the old folder, present in the new one), each committed by its own folder's sync.

A cut is asked for on the control socket ``STATE_DIR/control.sock`` (the line ``cut``,
answered ``ok N M``: N of M uncommitted journal entries kept; ``cut none`` keeps none)
after the writers were killed with SIGKILL; the harness then unmounts. The next mount
rebuilds ``live`` from the durable state, so it shows exactly what the device would find
after the power came back.
SQLite in WAL mode works on it: the kernel's page cache stays on (no ``direct_io``), so
the ``-shm`` file can be mapped shared.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import random
import shutil
import socket
import stat
import threading
from pathlib import Path
from typing import Any

from fuse import FUSE, FuseOSError, Operations  # type: ignore[import-untyped]

Entry = dict[str, Any]  # {"ino": int, "kind": "file" | "dir" | "link", "target": str}


class Durable:
    """What survives a cut: names (path -> entry) and each file's synced content."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.snaps = root / "snap"
        self.snaps.mkdir(parents=True, exist_ok=True)
        self.state_file = root / "durable.json"
        if self.state_file.exists():
            doc = json.loads(self.state_file.read_text())
            self.names: dict[str, Entry] = doc["names"]
            self.mtimes: dict[str, int] = doc["mtimes"]
            self.next_ino: int = doc["next_ino"]
        else:
            self.names = {"/": {"ino": 1, "kind": "dir"}}
            self.mtimes = {}
            self.next_ino = 2

    def save(self) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        doc = {"names": self.names, "mtimes": self.mtimes, "next_ino": self.next_ino}
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, self.state_file)

    def apply(self, op: tuple[Any, ...]) -> None:
        """Replay one journal entry onto the durable names."""
        kind = op[0]
        if kind == "add":
            self.names[op[1]] = op[2]
        elif kind == "remove":
            self.names.pop(op[1], None)
        elif kind == "rename":
            old, new = op[1], op[2]
            moved = {p: e for p, e in self.names.items() if p == old or p.startswith(old + "/")}
            for p in moved:
                del self.names[p]
            for p, e in moved.items():
                self.names[new + p[len(old) :]] = e

    def restore(self, live: Path) -> None:
        """Make ``live`` what the durable state says, content and mtimes included."""
        if live.exists():
            shutil.rmtree(live)
        live.mkdir()
        for path in sorted(self.names, key=lambda p: p.count("/")):
            entry, target = self.names[path], live / path.lstrip("/")
            if path == "/":
                continue
            if not target.parent.is_dir():  # its folder's name was never committed: lost
                del self.names[path]
                continue
            if entry["kind"] == "dir":
                target.mkdir(exist_ok=True)
            elif entry["kind"] == "link":
                os.symlink(entry["target"], target)
            else:
                snap = self.snaps / str(entry["ino"])
                if snap.exists():
                    shutil.copyfile(snap, target)
                else:
                    target.touch()
                mtime = self.mtimes.get(str(entry["ino"]))
                if mtime is not None:
                    os.utime(target, ns=(mtime, mtime))


class PowerFS(Operations):  # type: ignore[misc]
    """Pass-through to ``live`` with the durability bookkeeping of ``Durable``."""

    def __init__(self, root: Path, seed: int | None, model: str = "ext4") -> None:
        self.durable = Durable(root)
        self.live = root / "live"
        self.durable.restore(self.live)
        self.names: dict[str, Entry] = {p: dict(e) for p, e in self.durable.names.items()}
        self.journal: list[tuple[Any, ...]] = []
        self._mutex = threading.RLock()
        self.rng = random.Random(seed)
        self.fsyncs = 0
        self.model = model

    def _full(self, path: str) -> str:
        return str(self.live / path.lstrip("/"))

    # --- the bookkeeping -------------------------------------------------------------

    def _add(self, path: str, kind: str, target: str = "") -> None:
        with self._mutex:
            entry: Entry = {"ino": self.durable.next_ino, "kind": kind}
            if target:
                entry["target"] = target
            self.durable.next_ino += 1
            self.names[path] = entry
            self.journal.append(("add", path, dict(entry)))

    def _remove(self, path: str) -> None:
        with self._mutex:
            self.names.pop(path, None)
            self.journal.append(("remove", path))

    def _commit(self, folder: str | None) -> None:
        """Apply the journal (``folder`` None) or, in the posix model, the changes of the
        names in ``folder`` (a rename within it counts; a folder's rename commits whole)."""
        keep: list[tuple[Any, ...]] = []
        for op in self.journal:
            touches = {parent(p) for p in op[1:3] if isinstance(p, str)}
            if folder is None or folder in touches:
                self.durable.apply(op)
            else:
                keep.append(op)
        self.journal[:] = keep

    def _sync(self, path: str, is_dir: bool) -> None:
        with self._mutex:
            self.fsyncs += 1
            if self.model == "ext4":
                self._commit(None)
            elif is_dir:
                self._commit(path)
            entry = self.names.get(path)
            if not is_dir and entry is not None and entry["kind"] == "file":
                ino = str(entry["ino"])
                shutil.copyfile(self._full(path), self.durable.snaps / ino)
                self.durable.mtimes[ino] = os.stat(self._full(path)).st_mtime_ns
            self.durable.save()

    def cut(self, keep_none: bool = False) -> str:
        """The power goes: a random prefix of the uncommitted names survives (none with
        ``keep_none``: the worst case, for tests that need it exactly)."""
        with self._mutex:
            total = len(self.journal)
            kept = 0 if keep_none else self.rng.randint(0, total)
            for op in self.journal[:kept]:
                self.durable.apply(op)
            self.journal.clear()
            self.durable.save()
            return f"ok {kept} {total}"

    # --- the operations --------------------------------------------------------------

    def access(self, path: str, amode: int) -> None:
        if not os.access(self._full(path), amode):
            raise FuseOSError(errno.EACCES)

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        st = os.lstat(self._full(path))
        keys = ("st_atime", "st_ctime", "st_gid", "st_mode", "st_mtime", "st_nlink", "st_size",
                "st_uid", "st_atime_ns", "st_mtime_ns", "st_ctime_ns")  # fmt: skip
        out = {k: getattr(st, k) for k in keys}
        out["st_atime"], out["st_mtime"], out["st_ctime"] = (
            st.st_atime_ns / 1e9, st.st_mtime_ns / 1e9, st.st_ctime_ns / 1e9
        )  # fmt: skip
        return out

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", *os.listdir(self._full(path))]

    def readlink(self, path: str) -> str:
        return os.readlink(self._full(path))

    def statfs(self, path: str) -> dict[str, Any]:
        st = os.statvfs(self._full(path))
        keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files",
                "f_flag", "f_frsize", "f_namemax")  # fmt: skip
        return {k: getattr(st, k) for k in keys}

    def chmod(self, path: str, mode: int) -> None:
        os.chmod(self._full(path), mode)

    def chown(self, path: str, uid: int, gid: int) -> None:
        os.chown(self._full(path), uid, gid)

    def utimens(self, path: str, times: tuple[float, float] | None = None) -> None:
        os.utime(self._full(path), times)

    def mkdir(self, path: str, mode: int) -> None:
        with self._mutex:
            os.mkdir(self._full(path), mode)
            self._add(path, "dir")

    def rmdir(self, path: str) -> None:
        with self._mutex:
            os.rmdir(self._full(path))
            self._remove(path)

    def symlink(self, name: str, target: str) -> None:
        with self._mutex:
            os.symlink(target, self._full(name))
            self._add(name, "link", target)

    def link(self, target: str, source: str) -> None:
        raise FuseOSError(errno.EPERM)  # hard links are not modelled

    def unlink(self, path: str) -> None:
        with self._mutex:
            os.unlink(self._full(path))
            self._remove(path)

    def rename(self, old: str, new: str) -> None:
        with self._mutex:
            os.rename(self._full(old), self._full(new))
            moved = {p: e for p, e in self.names.items() if p == old or p.startswith(old + "/")}
            for p in moved:
                del self.names[p]
            for p, e in moved.items():
                self.names[new + p[len(old) :]] = e
            entry = self.names.get(new)
            split = self.model == "posix" and parent(old) != parent(new)
            if split and entry is not None and entry["kind"] != "dir":
                self.journal.append(("remove", old))  # two folders: two changes
                self.journal.append(("add", new, dict(entry)))
            else:
                self.journal.append(("rename", old, new))

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        with self._mutex:
            fd = os.open(self._full(path), os.O_RDWR | os.O_CREAT | os.O_TRUNC, mode)
            self._add(path, "file")
            return fd

    def open(self, path: str, flags: int) -> int:
        return os.open(self._full(path), flags)

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        return os.pread(fh, size, offset)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        return os.pwrite(fh, data, offset)

    def truncate(self, path: str, length: int, fh: int | None = None) -> None:
        if fh is not None:
            os.ftruncate(fh, length)
        else:
            os.truncate(self._full(path), length)

    def flush(self, path: str, fh: int) -> None:
        pass  # close(2) syncs nothing

    def release(self, path: str, fh: int) -> None:
        os.close(fh)

    def fsync(self, path: str, datasync: int, fh: int) -> None:
        self._sync(path, is_dir=False)

    def fsyncdir(self, path: str, datasync: int, fh: int) -> None:
        self._sync(path, is_dir=True)


def parent(path: str) -> str:
    """The folder a path is in: ``/a/b`` -> ``/a``, ``/a`` -> ``/``."""
    return path.rsplit("/", 1)[0] or "/"


def serve_control(fs: PowerFS, sock_path: Path) -> None:
    """Answer ``cut`` and ``stats`` lines on a Unix socket, one connection at a time."""
    sock_path.unlink(missing_ok=True)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(sock_path))
    srv.listen(4)
    while True:
        conn, _ = srv.accept()
        with conn:
            line = conn.makefile("r").readline().strip()
            if line in ("cut", "cut none"):
                answer = fs.cut(keep_none=line == "cut none")
            elif line == "stats":
                answer = f"fsyncs {fs.fsyncs} journal {len(fs.journal)}"
            else:
                answer = f"unknown command {line!r}"
            conn.sendall(answer.encode() + b"\n")


def ask(state_dir: Path, command: str, timeout: float = 30.0) -> str:
    """Send one control line to a mounted powerfs and return its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(state_dir / "control.sock"))
        s.sendall(command.encode() + b"\n")
        return s.makefile("r").readline().strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("state_dir", type=Path)
    ap.add_argument("mountpoint", type=Path)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--model", choices=("ext4", "posix"), default="ext4")
    args = ap.parse_args()
    fs = PowerFS(args.state_dir, args.seed, args.model)
    threading.Thread(
        target=serve_control, args=(fs, args.state_dir / "control.sock"), daemon=True
    ).start()
    if not stat.S_ISDIR(os.stat(args.mountpoint).st_mode):
        raise SystemExit(f"{args.mountpoint}: not a folder")
    print(f"powerfs mounted on {args.mountpoint}", flush=True)
    FUSE(fs, str(args.mountpoint), foreground=True, nothreads=False, default_permissions=True)


if __name__ == "__main__":
    main()
