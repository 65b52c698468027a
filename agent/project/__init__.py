"""The project side through the Studio API: metadata backfill, deletion sync, drift."""
