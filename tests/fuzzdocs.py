"""Seeded, structure-aware generators of hostile sidecars and ``info.labels`` files.

Shared by ``tests/unit/test_parser_fuzz.py`` (a CI-sized run) and ``bench/fuzz.py`` (the
100,000-document run). Each document starts valid and gets one or two defects: truncated
JSON, wrong types, huge values (long strings, 5,000-digit numbers, 1e400), deep nesting,
unknown keys, a BOM, invalid UTF-8, paths and NUL bytes in fields, sizes at and above the
limits. The same seed gives the same documents, so a failure is a fixed case to keep.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_uploader.bulk.infofile import MAX_ENTRY_BYTES, BadEntry, parse_entry, read_info_file
from edge_uploader.core.sidecar import MAX_SIDECAR_BYTES, parse_sidecar
from edge_uploader.errors import InputError, SidecarError

PATHLIKE = [
    "../../etc", "/etc/passwd", "..", ".", "a/../../b", "~root", "..\\..", "C:\\x",
    "\x00", "a\x00b", "a\nb", "$(touch /tmp/pwned)", "%2e%2e%2f", ".hidden", "-rf",
    "x" * 300, "a/" * 200, "link-out", "sub", "",
]  # fmt: skip
CATEGORIES = ["training", "testing", "split", "split-by-group", "anomaly", "trash", "TRAINING"]


def hostile(rng: random.Random) -> Any:
    """A value of a random wrong kind (or a right kind with a wrong content)."""
    return rng.choice([
        None, True, False, 0, -1, 1.5, 10**30, -(10**19), [], {}, ["a"], {"a": 1},
        {"a": None}, "", " ", "x" * rng.choice([257, 1025, 5000]), "\ufeff",
        "\u202e", "\x7f", rng.choice(PATHLIKE), [[[[]]]],
    ])  # fmt: skip


def nested(rng: random.Random) -> str:
    depth = rng.choice([10, 100, 999, 1001, 3000, 20_000])
    opener, closer = rng.choice([("[", "]"), ('{"a":', "}")])
    return opener * depth + "1" + closer * depth


# -- mutations on the encoded text ---------------------------------------------------------
def raw_mutation(rng: random.Random, text: str, limit: int) -> bytes:
    """One defect applied to the encoded document."""
    kind = rng.randrange(9)
    raw = text.encode("utf-8")
    if kind == 0:  # truncated
        return raw[: rng.randrange(len(raw))]
    if kind == 1:  # BOM
        return b"\xef\xbb\xbf" + raw
    if kind == 2:  # invalid UTF-8 at a random place
        at = rng.randrange(len(raw) + 1)
        return raw[:at] + rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf8\x88"]) + raw[at:]
    if kind == 3:  # not JSON
        return rng.randbytes(rng.randrange(64))
    if kind == 4:  # JSON, not an object
        return json.dumps(hostile(rng)).encode()
    if kind == 5:  # at the limit, padded with spaces (valid if the document was)
        return raw + b" " * max(0, limit - len(raw))
    if kind == 6:  # one byte above the limit
        return raw + b" " * max(0, limit + 1 - len(raw))
    if kind == 7:  # a huge number somewhere
        return raw.replace(b'"', b"1" * rng.choice([4300, 4301, 5000]) + b',"', 1)
    return nested(rng).encode()


# -- sidecars -----------------------------------------------------------------------------
def valid_sidecar(rng: random.Random) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    if rng.random() < 0.8:
        doc["label"] = rng.choice(["idle", "run 2", "wave é/ü", None, "x" * 256])
    if rng.random() < 0.5:
        doc["category"] = rng.choice(CATEGORIES[:5])
    if rng.random() < 0.7:
        doc["metadata"] = {f"k{i}": rng.choice(["a", "../../etc", "é", ""]) for i in range(3)}
    return doc


def sidecar(rng: random.Random) -> tuple[bytes, str | None]:
    """(document, the key its defect is in or None): a document with zero to two defects."""
    doc = valid_sidecar(rng)
    roll = rng.random()
    if roll < 0.1:
        return json.dumps(doc).encode(), None
    if roll < 0.45:
        return raw_mutation(rng, json.dumps(doc), MAX_SIDECAR_BYTES), None
    key = rng.choice(["label", "category", "metadata", "metadata.", "unknown"])
    if key == "unknown":
        key = rng.choice(["Label", "labels", "path", "__proto__", "\x00", "x" * 300, "../x"])
        doc[key] = hostile(rng)
    elif key == "metadata.":
        key = "metadata"
        doc["metadata"] = {rng.choice(["k", "", "\x00", "x" * 65, " k", *PATHLIKE]): hostile(rng)}
    else:
        value = hostile(rng)
        if key == "category" and value is None:
            value = "trash"
        if key == "label" and value is None:
            value = 7
        doc[key] = value
    ascii_only = rng.random() < 0.5
    return json.dumps(doc, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass"), key


# -- info.labels ----------------------------------------------------------------------------
FILES = ["a.wav", "sub/b.wav", "c.png"]
"""Real files beside the info file; ``link-out`` is a symlink out of the folder."""


def valid_entry(rng: random.Random) -> dict[str, Any]:
    entry: dict[str, Any] = {"path": rng.choice(FILES)}
    if rng.random() < 0.3:
        entry["name"] = rng.choice(["idle.01", "renamed.wav", "x"])
    if rng.random() < 0.5:
        entry["category"] = rng.choice(CATEGORIES[:3])
    entry["label"] = rng.choice([
        {"type": "label", "label": "idle"}, {"type": "unlabeled"},
        {"type": "multi-label", "labels": [{"label": "a", "startIndex": 0, "endIndex": 9},
                                           {"label": "b", "startIndex": 10, "endIndex": 19}]},
        {"type": "keyvalue-labels", "labels": {"site": "A"}},
    ])  # fmt: skip
    if rng.random() < 0.3:
        entry["metadata"] = {"site": "A"}
    if rng.random() < 0.2:
        entry["boundingBoxes"] = [{"label": "dog", "x": 1, "y": 2, "width": 3, "height": 4}]
    return entry


ENTRY_KEYS = ["path", "name", "category", "label", "metadata", "boundingBoxes"]
DEEP_KEYS = ["label.type", "label.label", "label.labels", "boundingBoxes[0].x", "metadata."]


def bad_entry(rng: random.Random) -> tuple[dict[str, Any], str]:
    entry = valid_entry(rng)
    key = rng.choice([*ENTRY_KEYS, *DEEP_KEYS])
    if key == "path":
        entry["path"] = rng.choice([*PATHLIKE, hostile(rng), "missing.wav"])
    elif key == "label.type":
        entry["label"] = {"type": hostile(rng)}
    elif key == "label.label":
        entry["label"] = {"type": "label", "label": hostile(rng)}
    elif key == "label.labels":
        entry["label"] = {"type": rng.choice(["multi-label", "keyvalue-labels"]),
                          "labels": rng.choice([hostile(rng), [{"label": "a", "startIndex": 1,
                                                "endIndex": 10**30}], {"k": hostile(rng)}])}  # fmt: skip
    elif key == "boundingBoxes[0].x":
        key = "boundingBoxes"
        entry["boundingBoxes"] = [{"label": "dog", "x": hostile(rng), "y": 0, "width": 1,
                                   "height": 1}]  # fmt: skip
    elif key == "metadata.":
        key = "metadata"
        entry["metadata"] = {rng.choice(["k", "\x00", "x" * 65]): hostile(rng)}
    else:
        entry[key] = hostile(rng)
    return entry, key.split(".")[0]


def info_file(rng: random.Random) -> bytes:
    """An info file (JSON or NDJSON) of 1 to 6 entries, some bad, maybe broken as a whole."""
    entries = [bad_entry(rng)[0] if rng.random() < 0.5 else valid_entry(rng)
               for _ in range(rng.randint(1, 6))]  # fmt: skip
    if rng.random() < 0.02:
        entries.append({"path": "a.wav", "metadata": {"pad": "y" * rng.choice([1000, 2000])},
                        "extra": "z" * (MAX_ENTRY_BYTES + rng.choice([-100, 1, 10]))})  # fmt: skip
    if rng.random() < 0.5:
        lines = [json.dumps({"__ndjson": True, "version": rng.choice([1, 1, 1, 2, "1"])})]
        lines += [json.dumps({"__key": rng.choice(["files"] * 5 + ["other"]), "__item": e})
                  for e in entries]  # fmt: skip
        if rng.random() < 0.3:
            at = rng.randrange(len(lines))
            lines[at] = rng.choice(["{", "[" * 2000, "1" * 5000, "\x00", "[]", "null"])
        text = "\n".join(lines) + "\n"
    else:
        text = json.dumps({"version": rng.choice([1, 1, 1, 2, None]), "files": entries})
    if rng.random() < 0.4:
        return raw_mutation(rng, text, 4096)
    return text.encode("utf-8", "surrogatepass")


# -- the oracles ------------------------------------------------------------------------------
@dataclass
class Tally:
    """Outcomes by kind (``refused: label``, ``accepted``...) and the cases that broke a rule."""

    outcomes: Counter[str] = field(default_factory=Counter)
    broken: list[str] = field(default_factory=list)

    def fail(self, case: str, what: str) -> None:
        if len(self.broken) < 20:
            self.broken.append(f"{case}: {what}")
        self.outcomes["broken"] += 1


PHRASES = (
    "unknown key",
    "not valid JSON",
    "larger than",
    "longer than",
    "expected a JSON",
    "not UTF-8",
)


def kind_of(message: str) -> str:
    """The field a refusal names (``label``, ``metadata``...) or its kind (``not valid JSON``)."""
    phrase = next((p for p in PHRASES if message.startswith(p)), None)
    if phrase is not None:
        return phrase
    match = re.match(r"[A-Za-z_]+", message)
    return match.group(0) if match else "?"


def check_sidecar(raw: bytes, key: str | None, case: str, tally: Tally) -> None:
    """A Context within the rules, or a SidecarError naming the file and the key."""
    where = "/captures/x.wav.meta.json"
    try:
        ctx = parse_sidecar(raw, where)
    except SidecarError as exc:
        msg = exc.message
        if exc.field != where:
            tally.fail(case, f"error does not name the file: {exc}")
        elif len(raw) > MAX_SIDECAR_BYTES and "larger than" not in msg:
            tally.fail(case, f"size limit not enforced first: {msg}")
        elif (
            key is not None
            and len(raw) <= MAX_SIDECAR_BYTES
            and key not in msg
            and (key in ("label", "category", "metadata") or "unknown key" not in msg)
        ):
            tally.fail(case, f"error does not name {key!r}: {msg}")
        tally.outcomes[f"sidecar refused: {kind_of(msg)}"] += 1
        return
    except Exception as exc:
        tally.fail(case, f"raised {type(exc).__name__}: {str(exc)[:200]}")
        return
    ok = (len(raw) <= MAX_SIDECAR_BYTES
          and all(isinstance(k, str) and isinstance(v, str) for k, v in ctx.metadata.items())
          and (ctx.category is None or ctx.category in CATEGORIES[:5])
          and (not isinstance(ctx.label, str) or len(ctx.label) <= 256))  # fmt: skip
    if not ok:
        tally.fail(case, f"accepted outside the rules: {ctx}")
    tally.outcomes["sidecar accepted"] += 1


def make_info_folder(folder: Path, outside: Path) -> Path:
    """The folder an info file lives in: ``FILES``, a sub folder and a link out of it."""
    for name in FILES:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"RIFF")
    outside.write_text("secret")
    (folder / "link-out").symlink_to(outside)
    return folder / "info.labels"


def check_info(info: Path, raw: bytes, case: str, tally: Tally) -> None:
    """Entries inside the folder, bad ones named by number, or an InputError naming the file."""
    info.write_bytes(raw)
    base = Path(os.path.realpath(info.parent))
    try:
        for item in read_info_file(info):
            if isinstance(item, BadEntry):
                if not item.where.startswith(f"{info}: ") or not item.reason:
                    tally.fail(case, f"bad entry without its place: {item}")
                tally.outcomes[f"info entry refused: {kind_of(item.reason)}"] += 1
            elif base not in item.path.parents or not item.path.is_file():
                tally.fail(case, f"entry outside its folder: {item.path}")
            else:
                tally.outcomes["info entry accepted"] += 1
    except InputError as exc:
        if exc.field != str(info):
            tally.fail(case, f"error does not name the file: {exc}")
        tally.outcomes["info file refused"] += 1
    except Exception as exc:
        tally.fail(case, f"raised {type(exc).__name__}: {str(exc)[:200]}")


def check_entry(base: Path, entry: dict[str, Any], key: str, case: str, tally: Tally) -> None:
    """One entry with a defect in ``key``: refused naming ``key``, or a usable entry."""
    try:
        got = parse_entry(entry, 1, base, "info.labels: entry 1")
    except Exception as exc:
        tally.fail(case, f"raised {type(exc).__name__}: {str(exc)[:200]}")
        return
    if isinstance(got, BadEntry):
        if not got.reason.startswith(key):
            tally.fail(case, f"refusal does not name {key!r}: {got.reason}")
        tally.outcomes[f"entry refused: {key}"] += 1
    else:
        tally.outcomes["entry accepted"] += 1


def run_parsers(seed: int, documents: int, folder: Path) -> Tally:
    """``documents`` generated documents: 60 % sidecars, 25 % info files, 15 % lone entries."""
    rng = random.Random(seed)
    info = make_info_folder(folder / "infos", folder / "outside.txt")
    base = Path(os.path.realpath(info.parent))
    tally = Tally()
    for n in range(documents):
        case = f"seed {seed} document {n}"
        roll = rng.random()
        if roll < 0.6:
            raw, key = sidecar(rng)
            check_sidecar(raw, key, case, tally)
        elif roll < 0.85:
            check_info(info, info_file(rng), case, tally)
        else:
            entry, key = bad_entry(rng)
            check_entry(base, entry, key, case, tally)
    return tally
