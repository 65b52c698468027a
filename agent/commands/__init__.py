"""Subcommands added through ``agent.cli.COMMAND_MODULES``: each module has ``register``.

- ``upload``: one-off bulk upload, resumable (``agent.bulk``);
- ``queue_care``: ``dead list|retry|drop`` and ``retry-now`` on the daemon's queue;
- ``check_config``: validate a config and show how a sample path would be tagged.
"""
