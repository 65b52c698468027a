"""``python -m edge_uploader.localserver --port 0 --data-dir D``: the emulator alone."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from ..errors import EX_CONFIG, ConfigError
from ..secrets import redact, secret_refusal
from .cli import add_arguments, run


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """A usage error never echoes a word that looks like an API key."""
        super().error(redact(message))


def main(argv: list[str] | None = None) -> int:
    """Parse, run, and map a configuration error to exit status 78."""
    parser = _Parser(
        prog="python -m edge_uploader.localserver",
        description="Local emulator of the Edge Impulse ingestion service.",
        allow_abbrev=False,
    )
    add_arguments(parser)
    words = sys.argv[1:] if argv is None else argv
    refusal = next(filter(None, map(secret_refusal, words)), None)
    if refusal is not None:  # before parsing: the value must never be echoed
        parser.error(refusal)
    args = parser.parse_args(words)
    try:
        return run(args)
    except ConfigError as exc:
        print(f"local-ingestion: {exc}", file=sys.stderr)
        return EX_CONFIG


if __name__ == "__main__":
    raise SystemExit(main())
