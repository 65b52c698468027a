"""``python -m edge_uploader.localserver --port 0 --data-dir D``: the emulator alone."""

from __future__ import annotations

import argparse
import sys

from ..errors import EX_CONFIG, ConfigError
from .cli import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    """Parse, run, and map a configuration error to exit status 78."""
    parser = argparse.ArgumentParser(
        prog="python -m edge_uploader.localserver",
        description="Local emulator of the Edge Impulse ingestion service.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except ConfigError as exc:
        print(f"local-ingestion: {exc}", file=sys.stderr)
        return EX_CONFIG


if __name__ == "__main__":
    raise SystemExit(main())
