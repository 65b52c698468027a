"""Allow ``python -m edge_uploader``."""

from .cli import main

raise SystemExit(main())
