"""``[mqtt]`` and ``[capture]`` config: defaults, the implicit watch, errors naming file + key."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from edge_uploader.config import CommandSource, SerialSource, load_config
from edge_uploader.config.capture import argv_fields, render_arg
from edge_uploader.errors import ConfigError

BASE = '[device]\nid = "pi-7"\n[queue]\npath = "q.db"\n'
SERIAL = (
    '[[capture.serial]]\nname = "accel"\nport = "/dev/ttyUSB0"\n'
    'sensors = [{ name = "accX", units = "m/s2" }, { name = "accY" }]\n'
)
COMMAND = (
    f'[[capture.command]]\nname = "cam"\nargv = ["{sys.executable}", "-c", "pass", "{{output}}",'
    ' "{duration_s}"]\nextension = "jpg"\n'
)


def load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "agent.toml"
    path.write_text(BASE + text)
    return load_config(path)


def error(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert info.value.source == str((tmp_path / "agent.toml").resolve())
    return info.value


def test_defaults(tmp_path: Path) -> None:
    cfg = load(
        tmp_path, '[mqtt]\nhost = "broker.lan"\n[capture]\ndir = "caps"\n' + SERIAL + COMMAND
    )
    mqtt, capture = cfg.mqtt, cfg.capture  # type: ignore[attr-defined]
    assert mqtt.port == 1883 and mqtt.client_id == "pi-7" and mqtt.protocol == "5"
    assert mqtt.topic_prefix == "edge-uploader/pi-7"
    assert mqtt.capture_topic == "edge-uploader/pi-7/capture"
    assert mqtt.password.env == "EI_MQTT_PASSWORD" and mqtt.tls is None
    assert capture.dir == (tmp_path / "caps").resolve() and capture.dir.is_dir()
    accel = capture.sources["accel"]
    assert isinstance(accel, SerialSource) and accel.frequency_hz is None
    assert accel.baudrate == 115200 and accel.sensors[1].units == "N/A"
    cam = capture.sources["cam"]
    assert isinstance(cam, CommandSource) and cam.extension == ".jpg"
    [watch] = cfg.watches  # type: ignore[attr-defined]
    assert watch.path == capture.dir and set(watch.patterns) == {"*.json", "*.jpg"}
    assert watch.recursive is False and watch.settle_seconds == 0.0


def test_tls_default_port_and_prefix_template(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text("x")
    cfg = load(
        tmp_path,
        '[mqtt]\nhost = "b"\ntopic_prefix = "fleet/{device_id}/"\n[mqtt.tls]\nca_file = "ca.crt"\n',
    )
    assert cfg.mqtt.port == 8883 and cfg.mqtt.topic_prefix == "fleet/pi-7"  # type: ignore[attr-defined]
    assert cfg.mqtt.tls.ca_file == (tmp_path / "ca.crt").resolve()  # type: ignore[attr-defined]


def test_no_sections_no_features(tmp_path: Path) -> None:
    cfg = load(tmp_path, "")
    assert cfg.mqtt is None and cfg.capture is None and cfg.watches == ()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ("[mqtt]\nport = 1\n", "mqtt.host", "is required"),
        ('[mqtt]\nhost = "b"\nport = 70000\n', "mqtt.port", "1 to 65535"),
        ('[mqtt]\nhost = "b"\nprotocol = "3"\n', "mqtt.protocol", "one of 5, 3.1.1"),
        ('[mqtt]\nhost = "b"\ntopic_prefix = "a/+/b"\n', "mqtt.topic_prefix", "without +"),
        ('[mqtt]\nhost = "b"\npasword_file = "p"\n', "mqtt.pasword_file", "unknown key"),
        ('[mqtt]\nhost = "b"\n[mqtt.tls]\nca_file = "nope.crt"\n', "mqtt.tls.ca_file", "readable"),
        (
            '[mqtt]\nhost = "b"\nreconnect_min_seconds = 9\nreconnect_max_seconds = 2\n',
            "mqtt.reconnect_max_seconds",
            "at least",
        ),
        ("[capture]\n", "capture.dir", "is required"),
        (
            '[capture]\ndir = "c"\n[[capture.serial]]\nname = "a b"\nport = "p"\n',
            "capture.serial[0].name",
            "letters, digits",
        ),
        (
            '[capture]\ndir = "c"\n[[capture.serial]]\nname = "a"\nport = "p"\n',
            "capture.serial[0].sensors",
            "is required",
        ),
        (
            '[capture]\ndir = "c"\n' + SERIAL + 'frequency_hz = "fast"\n',
            "capture.serial[0].frequency_hz",
            '"auto"',
        ),
        (
            '[capture]\ndir = "c"\n'
            + SERIAL
            + SERIAL.replace("[[capture.serial]]", "[[capture.serial]]"),
            "capture.serial[1].name",
            "another capture source",
        ),
        (
            '[capture]\ndir = "c"\n[[capture.command]]\nname = "c"\nargv = ["/bin/true"]\n'
            'extension = "jpg"\n',
            "capture.command[0].argv",
            "{output}",
        ),
        (
            '[capture]\ndir = "c"\n[[capture.command]]\nname = "c"\n'
            'argv = ["/bin/true", "{output}", "{label}"]\nextension = "jpg"\n',
            "capture.command[0].argv[2]",
            "unknown placeholder",
        ),
        (
            '[capture]\ndir = "c"\n[[capture.command]]\nname = "c"\nargv = ["no-such-prog-xyz",'
            ' "{output}"]\nextension = "jpg"\n',
            "capture.command[0].argv[0]",
            "not an executable",
        ),
        (
            '[capture]\ndir = "c"\n[[capture.command]]\nname = "c"\n'
            'argv = ["/bin/true", "{output}"]\nextension = "exe"\n',
            "capture.command[0].extension",
            "accepts",
        ),
        ('[capture]\ndir = "c"\nafter_upload = "move"\n', "capture.move_to", "required"),
        ('[capture]\ndir = "w/c"\n[[watch]]\npath = "w"\n', "capture.dir", "overlaps watch[0]"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, key: str, words: str) -> None:
    (tmp_path / "w").mkdir()
    exc = error(tmp_path, text)
    assert exc.key == key and words in exc.message, (exc.key, exc.message)


def test_argv_placeholders() -> None:
    assert argv_fields("--out={output}.{{x}}") == {"output"}
    assert argv_fields("{") is None
    assert render_arg("-t{duration_ms}{{ms}}", {"duration_ms": "20"}) == "-t20{ms}"


def test_the_example_config_parses() -> None:
    example = Path(__file__).resolve().parents[2] / "config" / "agent.example.toml"
    cfg = load_config(example, check_dirs=False)
    assert cfg.mqtt is not None and cfg.mqtt.tls is not None and cfg.mqtt.port == 8883
    assert cfg.capture is not None and set(cfg.capture.sources) == {"accel", "camera", "mic"}


def test_group_topics_default_to_the_site_and_the_fleet(tmp_path: Path) -> None:
    cfg = load(tmp_path, '[metadata]\nsite = "lab-3"\n[mqtt]\nhost = "broker.lan"\n')
    mqtt = cfg.mqtt  # type: ignore[attr-defined]
    assert mqtt.command_topics == (
        "edge-uploader/pi-7/capture",
        "edge-uploader/site/lab-3/capture",
        "edge-uploader/fleet/capture",
    )
    assert mqtt.topic_pattern == "edge-uploader/+" and mqtt.site == "lab-3"
    assert mqtt.is_group_topic("edge-uploader/site/lab-3/capture")
    assert not mqtt.is_group_topic("edge-uploader/pi-7/capture")


def test_group_topics_configured_or_turned_off(tmp_path: Path) -> None:
    cfg = load(tmp_path, '[metadata]\nsite = "{device_id}-site"\n[mqtt]\nhost = "b"\n'
               'topic_prefix = "acme/dev/{device_id}"\nsite_topic_prefix = "acme/sites/"\n'
               'fleet_topic = ""\n')  # fmt: skip
    mqtt = cfg.mqtt  # type: ignore[attr-defined]
    assert mqtt.command_topics == ("acme/dev/pi-7/capture", "acme/sites/pi-7-site/capture")
    assert mqtt.topic_pattern == "acme/dev/+"
    no_site = load(tmp_path, '[metadata]\nsite = "{dir}"\n[mqtt]\nhost = "b"\n')
    assert no_site.mqtt.command_topics == (  # type: ignore[attr-defined]
        "edge-uploader/pi-7/capture", "edge-uploader/fleet/capture")  # fmt: skip


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[metadata]\nsite = "a+b"\n[mqtt]\nhost = "b"\n', "site_topic_prefix"),
        ('[mqtt]\nhost = "b"\nsite_topic_prefix = "x/#"\n', "site_topic_prefix"),
        ('[mqtt]\nhost = "b"\nfleet_topic = "all//capture"\n', "fleet_topic"),
    ],
)
def test_unusable_group_topics_are_config_errors(tmp_path: Path, text: str, key: str) -> None:
    assert error(tmp_path, text).key == f"mqtt.{key}"
