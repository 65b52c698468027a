"""What start-up and reload both do before anything runs: one code path for both.

``prepare(path)`` loads and validates the config, reads the API key (and the HMAC key and
the MQTT password if configured) so a missing or unreadable secret is a config error (exit
78, or a refused reload) and not a runtime surprise, and warns about config and key files
that other users can read. The shipped demo (``make run``: ``config/dev.toml`` with the
public ``config/dev-api-key``) is recognised by its key, which only the local ingestion
server accepts: a config that uses it guards nothing, so it and its key file get one
notice instead of the warnings (a fresh clone's files are 0644). Any other key, and every
other secret of that config (HMAC key, MQTT password, client key), is warned about as ever.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import SecretError
from ..secrets import readable_by_others
from .load import load_config
from .model import Config

log = logging.getLogger(__name__)


def prepare(path: Path | None) -> Config:
    """Load ``path`` for running; raises ``ConfigError`` (including ``SecretError``)."""
    config = load_config(path)
    config.ingestion.api_key.load()
    config.ingestion.hmac_key.load_optional()
    if config.mqtt is not None:
        config.mqtt.password.load_optional()
    warn_exposed(config)
    return config


def warn_exposed(config: Config) -> list[Path]:
    """Warn about the config file and key files other users can read; returns them."""
    files: list[tuple[str, Path]] = []
    demo = _uses_demo_key(config)
    if config.source != "defaults" and not demo:
        files.append(("config file", Path(config.source)))
    secrets = [config.ingestion.hmac_key]
    if not demo:
        secrets.insert(0, config.ingestion.api_key)
    if config.mqtt is not None:
        secrets.append(config.mqtt.password)
        if config.mqtt.tls is not None and config.mqtt.tls.key_file is not None:
            files.append(("MQTT client key file (mqtt.tls.key_file)", config.mqtt.tls.key_file))
    for secret in secrets:
        if secret.file is not None:
            files.append((f"{secret.what} file ({secret.config_key})", secret.file))
    exposed = [path for _, path in files if readable_by_others(path)]
    for what, path in files:
        if path in exposed:
            log.warning(
                "the %s %s can be read by other users: run `chmod o-rwx,g-w %s` (and give it"
                " to the service's own group), or use a systemd credential for keys",
                what, path, path,
            )  # fmt: skip
    return exposed


def _uses_demo_key(config: Config) -> bool:
    """True (with a notice) when the API key is the public demo key of ``make run``."""
    try:
        demo = config.ingestion.api_key.load().is_demo()
    except SecretError:
        return False
    if demo:
        log.info(
            "using the public demo API key (%s): only the local ingestion server accepts it;"
            " a real device needs its project's key",
            config.ingestion.api_key.file or config.ingestion.api_key.env or "a credential",
        )
    return demo
