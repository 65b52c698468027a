"""The one-off ``upload`` command: what it names (inputs, info.labels), the run, its display.

A run goes through the daemon's own intake, queue and delivery, as a batch of the queue.
"""
