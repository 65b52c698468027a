"""Tests of the local ingestion server (agent.localserver)."""
