"""The configuration: one TOML file, validated once into frozen dataclasses.

``load_config`` is the entry point; ``prepare`` (in ``preflight``) adds what starting the
daemon needs (secrets readable, exposed files warned about). The dataclasses and every
default live in ``model``; each table's parser in its own module (``load`` for the core
tables, ``mqtt``, ``capture``, ``ops``, ``project``), all reading through ``table.Table``.
"""

from .discover import CONFIG_ENV, FoundConfig, find_config
from .load import default_state_dir, load_config, parse_config
from .model import (
    AFTER_UPLOAD,
    CATEGORIES,
    CONFIG_CATEGORIES,
    DEFAULT_PATTERNS,
    DEFAULT_STUDIO_URL,
    DEFAULT_URL,
    SPLIT_BY_GROUP,
    URL_ENV,
    URL_ENV_SDK,
    AfterUpload,
    CaptureConfig,
    CaptureSource,
    CommandSource,
    Concurrency,
    Config,
    DiskConfig,
    HealthConfig,
    HttpConfig,
    IngestionConfig,
    MqttConfig,
    QueueConfig,
    Sensor,
    SerialSource,
    StudioConfig,
    SyncConfig,
    TaggingConfig,
    TlsConfig,
    WatchConfig,
)

__all__ = [
    "AFTER_UPLOAD",
    "CATEGORIES",
    "CONFIG_CATEGORIES",
    "CONFIG_ENV",
    "DEFAULT_PATTERNS",
    "DEFAULT_STUDIO_URL",
    "DEFAULT_URL",
    "SPLIT_BY_GROUP",
    "URL_ENV",
    "URL_ENV_SDK",
    "AfterUpload",
    "CaptureConfig",
    "CaptureSource",
    "CommandSource",
    "Concurrency",
    "Config",
    "DiskConfig",
    "FoundConfig",
    "HealthConfig",
    "HttpConfig",
    "IngestionConfig",
    "MqttConfig",
    "QueueConfig",
    "Sensor",
    "SerialSource",
    "StudioConfig",
    "SyncConfig",
    "TaggingConfig",
    "TlsConfig",
    "WatchConfig",
    "default_state_dir",
    "find_config",
    "load_config",
    "parse_config",
]
