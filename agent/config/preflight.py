"""What start-up and reload both do before anything runs: one code path for both.

``prepare(path)`` loads and validates the config, reads the API key (and the HMAC key and
the MQTT password if configured) so a missing or unreadable secret is a config error (exit
78, or a refused reload) and not a runtime surprise, and warns about config and key files
that other users can read.
"""

from __future__ import annotations

import logging
from pathlib import Path

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
    if config.source != "defaults":
        files.append(("config file", Path(config.source)))
    secrets = [config.ingestion.api_key, config.ingestion.hmac_key]
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
