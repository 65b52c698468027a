"""The remote services: ingestion (uploads) and Studio (samples), over one HTTP layer."""
