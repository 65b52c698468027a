"""Config contract: every key, its default, and errors that name file, key path and reason."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_uploader import cli
from edge_uploader.config import DEFAULT_PATTERNS, DEFAULT_URL, Config, load_config
from edge_uploader.core.tagger import tag
from edge_uploader.errors import EX_CONFIG, ConfigError, SecretError
from edge_uploader.metadata import MAX_METADATA_BYTES, encode_metadata

Load = Callable[..., Config]
Write = Callable[..., Path]


def config_error(load: Load, body: str, **kwargs: object) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(body, **kwargs)
    return info.value


# -- defaults and every key ----------------------------------------------------------------


def test_empty_file_gives_documented_defaults(load_toml: Load, tmp_path: Path) -> None:
    cfg = load_toml("")
    assert cfg.source == str(tmp_path / "agent.toml")
    assert cfg.device_id == socket.gethostname()
    assert cfg.hostname == socket.gethostname()
    assert dict(cfg.metadata) == {}
    ing = cfg.ingestion
    assert ing.url == DEFAULT_URL == "https://ingestion.edgeimpulse.com"
    assert ing.category == "training"
    assert ing.concurrency == "auto"
    assert ing.max_concurrency == 32
    assert ing.workers == 32
    assert ing.timeout_seconds == 60.0
    assert ing.group_key == "session"
    assert ing.testing_fraction == 0.2
    assert ing.allow_duplicates is False
    assert ing.api_key.file is None
    assert ing.api_key.env == "EI_API_KEY"
    assert cfg.watches == ()


def test_device_id_is_used_when_set(load_toml: Load) -> None:
    cfg = load_toml('[device]\nid = "pi-0042"\n')
    assert cfg.device_id == "pi-0042"
    assert cfg.hostname == socket.gethostname()


@pytest.mark.parametrize("bad", ["a/b", "tab\there", "x" * 129])
def test_device_id_must_be_plain(load_toml: Load, bad: str) -> None:
    err = config_error(load_toml, f"[device]\nid = {bad!r}\n".replace("'", '"'))
    assert err.key == "device.id"
    assert "printable text without '/'" in err.message


def test_metadata_table_holds_literals_and_templates(load_toml: Load) -> None:
    cfg = load_toml('[device]\nid = "pi"\n[metadata]\nsite = "north"\nfolder = "{dir}"\n')
    assert set(cfg.metadata) == {"site", "folder"}
    assert cfg.metadata["site"].is_literal
    assert not cfg.metadata["folder"].is_literal
    assert cfg.metadata["folder"].render(Path("/d/sess-7/a.wav"), "pi", "h") == "sess-7"


def test_performance_keys(load_toml: Load) -> None:
    cfg = load_toml(
        '[ingestion]\nconcurrency = "auto"\nmax_concurrency = 12\nmax_files_per_request = 100\n'
        "max_request_bytes = 4000000\n[tagging]\ncaptured_at = false\n"
    )
    ing = cfg.ingestion
    assert (ing.concurrency, ing.max_concurrency, ing.workers) == ("auto", 12, 12)
    assert (ing.max_files_per_request, ing.max_request_bytes) == (100, 4_000_000)
    assert cfg.tagging.captured_at is False
    assert load_toml("").tagging.captured_at is True
    fixed = load_toml("[ingestion]\nconcurrency = 6\n").ingestion
    assert (fixed.concurrency, fixed.workers) == (6, 6)


@pytest.mark.parametrize(
    ("body", "key"),
    [("[ingestion]\nmax_files_per_request = 1001\n", "ingestion.max_files_per_request"),
     ("[ingestion]\nmax_concurrency = 0\n", "ingestion.max_concurrency"),
     ('[ingestion]\nconcurrency = "fast"\n', "ingestion.concurrency"),
     ("[tagging]\ncaptured_at = 1\n", "tagging.captured_at"),
     ("[tagging]\ncaptured = true\n", "tagging.captured")],
)  # fmt: skip
def test_performance_key_errors(load_toml: Load, body: str, key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_toml(body)
    assert exc.value.key == key


def test_every_ingestion_key(load_toml: Load, tmp_path: Path) -> None:
    cfg = load_toml(
        """
[ingestion]
url = "http://127.0.0.1:4810/"
api_key_file = "secrets/api_key"
category = "split-by-group"
concurrency = 7
timeout_seconds = 12.5
group_key = "recording"
testing_fraction = 0.35
"""
    )
    ing = cfg.ingestion
    assert ing.url == "http://127.0.0.1:4810"  # trailing slash dropped
    assert ing.api_key.file == tmp_path / "secrets" / "api_key"
    assert ing.api_key.config_key == "ingestion.api_key_file"
    assert ing.category == "split-by-group"
    assert ing.concurrency == 7
    assert ing.timeout_seconds == 12.5
    assert ing.group_key == "recording"
    assert ing.testing_fraction == 0.35


@pytest.mark.parametrize("category", ["training", "testing", "anomaly", "split", "split-by-group"])
def test_contract_categories_are_accepted(load_toml: Load, category: str) -> None:
    assert load_toml(f'[ingestion]\ncategory = "{category}"\n').ingestion.category == category


def test_api_key_file_is_read_and_never_printed(load_toml: Load, tmp_path: Path) -> None:
    (tmp_path / "key").write_text("ei_0123456789abcdef\n")
    cfg = load_toml('[ingestion]\napi_key_file = "key"\n')
    secret = cfg.ingestion.api_key.load()
    assert secret.reveal() == "ei_0123456789abcdef"
    assert "ei_0123" not in repr(cfg)


def test_api_key_from_ei_api_key_variable(load_toml: Load, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EI_API_KEY", "ei_from_env")
    assert load_toml("").ingestion.api_key.load().reveal() == "ei_from_env"


def test_api_key_file_wins_over_variable(
    load_toml: Load, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EI_API_KEY", "ei_from_env")
    (tmp_path / "key").write_text("ei_from_file")
    cfg = load_toml('[ingestion]\napi_key_file = "key"\n')
    assert cfg.ingestion.api_key.load().reveal() == "ei_from_file"


def test_missing_api_key_names_every_place_looked(load_toml: Load) -> None:
    cfg = load_toml("")
    with pytest.raises(SecretError) as info:
        cfg.ingestion.api_key.load()
    assert info.value.key == "ingestion.api_key_file"
    assert "EI_API_KEY" in info.value.message
    assert "systemd credential named api_key" in info.value.message


def test_queue_path_relative_to_config(load_toml: Load, tmp_path: Path) -> None:
    cfg = load_toml('[queue]\npath = "state/queue.db"\n')
    assert cfg.queue.path == tmp_path / "state" / "queue.db"


def test_queue_path_default_is_the_state_directory(
    load_toml: Load, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path}/st:/other")
    assert load_toml("").queue.path == tmp_path / "st" / "queue.db"


def test_every_watch_key(load_toml: Load, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    cfg = load_toml(
        """
[[watch]]
path = "in"
patterns = ["*.WAV", "*.csv"]
recursive = false
label = "{dir}"
category = "testing"
metadata = { session = "{dir}", rig = "B" }
after_upload = "move"
move_to = "done"
"""
    )
    (w,) = cfg.watches
    assert w.path == tmp_path / "in"
    assert w.patterns == ("*.wav", "*.csv")  # matched case-insensitively
    assert w.recursive is False
    assert w.label is not None and w.label.source == "{dir}"
    assert w.category == "testing"
    assert {k: t.source for k, t in w.metadata.items()} == {"session": "{dir}", "rig": "B"}
    assert w.after_upload == "move"
    assert w.move_to == tmp_path / "done"
    assert w.key == f"watch:{tmp_path / 'in'}"


def test_watch_defaults(load_toml: Load, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (w,) = load_toml('[[watch]]\npath = "in"\n').watches
    assert w.patterns == DEFAULT_PATTERNS
    assert w.recursive is True
    assert w.label is None
    assert w.category is None
    assert dict(w.metadata) == {}
    assert w.after_upload == "keep"
    assert w.move_to is None


@pytest.mark.parametrize("action", ["keep", "delete"])
def test_after_upload_keep_and_delete(load_toml: Load, tmp_path: Path, action: str) -> None:
    (tmp_path / "in").mkdir()
    (w,) = load_toml(f'[[watch]]\npath = "in"\nafter_upload = "{action}"\n').watches
    assert w.after_upload == action


def test_relative_paths_resolve_against_the_config_folder(
    write_toml: Write, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "captures").mkdir()
    path = write_toml(
        """
[ingestion]
api_key_file = "api_key"
[queue]
path = "../state/q.db"
[[watch]]
path = "../captures"
after_upload = "move"
move_to = "../uploaded"
""",
        "etc/agent.toml",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(Path("../etc/agent.toml"))
    assert cfg.source == str(path)
    assert cfg.ingestion.api_key.file == tmp_path / "etc" / "api_key"
    assert cfg.queue.path == tmp_path / "state" / "q.db"
    assert cfg.watches[0].path == tmp_path / "captures"
    assert cfg.watches[0].move_to == tmp_path / "uploaded"


# -- errors name the file, the key path and what was expected ------------------------------


@pytest.mark.parametrize(
    ("body", "key", "expected"),
    [
        ('[ingestoin]\nurl = "http://x"\n', "ingestoin", "unknown key"),
        ("[device]\nname = 'x'\n", "device.name", "unknown key"),
        (
            '[ingestion]\nurl = "http://x"\ncategroy = "testing"\n',
            "ingestion.categroy",
            "unknown key",
        ),
        ("[queue]\nsize = 3\n", "queue.size", "unknown key"),
        ("device = 3\n", "device", "expected a table, got a number"),
        ("[device]\nid = 7\n", "device.id", "expected a string, got a number"),
        ('[device]\nid = ""\n', "device.id", "expected a non-empty string"),
        (
            '[ingestion]\nconcurrency = "4"\n',
            "ingestion.concurrency",
            'expected a whole number from 1 to 64 or "auto", got a string',
        ),
        (
            "[ingestion]\nconcurrency = 0\n",
            "ingestion.concurrency",
            "expected a whole number from 1 to 64, got 0",
        ),
        (
            "[ingestion]\nconcurrency = true\n",
            "ingestion.concurrency",
            "expected a whole number from 1 to 64, got a boolean",
        ),
        (
            '[ingestion]\ntimeout_seconds = "60"\n',
            "ingestion.timeout_seconds",
            "expected a number from 0.1 to 3600, got a string",
        ),
        (
            "[ingestion]\ntesting_fraction = 1.5\n",
            "ingestion.testing_fraction",
            "expected a number from 0 to 1, got 1.5",
        ),
        (
            '[ingestion]\ncategory = "train"\n',
            "ingestion.category",
            "expected one of training, testing, validation, post-processing, anomaly, split, "
            "split-by-group; got 'train'",
        ),
        ('[ingestion]\nurl = "ftp://x"\n', "ingestion.url", "expected an http:// or https:// URL"),
        ('[ingestion]\ngroup_key = " session"\n', "ingestion.group_key", "edge spaces"),
        (
            "[ingestion]\nallow_duplicates = 1\n",
            "ingestion.allow_duplicates",
            "expected true or false, got a number",
        ),
        ("[metadata]\nsite = 3\n", "metadata.site", "metadata values must be strings, got int"),
        (
            "[metadata]\nsite = ['a']\n",
            "metadata.site",
            "metadata values must be strings, got list",
        ),
        ('[metadata]\nsite = "{folder}"\n', "metadata.site", "unknown placeholder {folder}"),
        (
            '[metadata]\nsite = "{env:EU_UNSET_VARIABLE}"\n',
            "metadata.site",
            "{env:EU_UNSET_VARIABLE}: environment variable EU_UNSET_VARIABLE is not set",
        ),
        ('[metadata]\nsite = "a{b"\n', "metadata.site", "unmatched brace"),
        ("watch = 3\n", "watch", "expected an array of tables ([[watch]])"),
        ("[[watch]]\nrecursive = true\n", "watch[0].path", "is required (the folder to watch)"),
    ],
)
def test_errors_name_file_key_and_expectation(
    load_toml: Load, tmp_path: Path, body: str, key: str, expected: str
) -> None:
    err = config_error(load_toml, body)
    source = str(tmp_path / "agent.toml")
    assert err.source == source
    assert err.key == key
    assert expected in err.message
    assert str(err).startswith(f"{source}: {key}: ")


@pytest.fixture
def watch_dir(tmp_path: Path) -> Path:
    (tmp_path / "in").mkdir()
    return tmp_path / "in"


@pytest.mark.parametrize(
    ("lines", "key", "expected"),
    [
        ('after_uplaod = "delete"', "watch[0].after_uplaod", "unknown key"),
        (
            'after_upload = "archive"',
            "watch[0].after_upload",
            "expected one of keep, delete, move; got 'archive'",
        ),
        ('after_upload = "move"', "watch[0].move_to", 'is required when after_upload = "move"'),
        ('move_to = "done"', "watch[0].move_to", 'is only used with after_upload = "move"'),
        (
            'after_upload = "move"\nmove_to = "in/done"',
            "watch[0].move_to",
            "inside the watched folder",
        ),
        ('after_upload = "move"\nmove_to = "in"', "watch[0].move_to", "inside the watched folder"),
        ('patterns = "*.wav"', "watch[0].patterns", "expected a list of non-empty strings"),
        ("patterns = []", "watch[0].patterns", "expected at least one entry"),
        ('recursive = "yes"', "watch[0].recursive", "expected true or false, got a string"),
        ('label = "{session}"', "watch[0].label", "unknown placeholder {session}"),
        ('label = "{env:1BAD}"', "watch[0].label", "bad environment variable name"),
        ('category = "split-by-folder"', "watch[0].category", "expected one of"),
        ("metadata = { n = 1 }", "watch[0].metadata.n", "metadata values must be strings, got int"),
        ('metadata = { n = "{nope}" }', "watch[0].metadata.n", "unknown placeholder {nope}"),
    ],
)
def test_watch_errors(
    load_toml: Load, watch_dir: Path, lines: str, key: str, expected: str
) -> None:
    err = config_error(load_toml, f'[[watch]]\npath = "in"\n{lines}\n')
    assert err.key == key
    assert expected in err.message


def test_missing_watch_folder(load_toml: Load, tmp_path: Path) -> None:
    err = config_error(load_toml, '[[watch]]\npath = "nope"\n')
    assert err.key == "watch[0].path"
    assert err.message == f"{tmp_path / 'nope'} does not exist or is not a directory"


def test_missing_watch_folder_is_fine_without_dir_checks(load_toml: Load, tmp_path: Path) -> None:
    cfg = load_toml('[[watch]]\npath = "nope"\n', check_dirs=False)
    assert cfg.watches[0].path == tmp_path / "nope"


def test_the_same_folder_twice(load_toml: Load, watch_dir: Path) -> None:
    err = config_error(load_toml, '[[watch]]\npath = "in"\n[[watch]]\npath = "in/"\n')
    assert err.key == "watch[1].path"
    assert "is already watch[0]" in err.message


def test_second_watch_errors_name_their_index(load_toml: Load, watch_dir: Path) -> None:
    err = config_error(load_toml, '[[watch]]\npath = "in"\n[[watch]]\npath = "in"\nlabel = "{x}"\n')
    assert err.key == "watch[1].label"


def test_invalid_toml(load_toml: Load, tmp_path: Path) -> None:
    err = config_error(load_toml, "[device\nid = 3\n")
    assert err.source == str(tmp_path / "agent.toml")
    assert err.key == ""
    assert err.message.startswith("not valid TOML: ")
    assert str(err).startswith(f"{tmp_path / 'agent.toml'}: not valid TOML")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "absent.toml")
    assert info.value.source == str(tmp_path / "absent.toml")
    assert info.value.message == "file not found"


def _filler(n_keys: int, value_chars: int) -> str:
    return "".join(f'k{i} = "{"v" * value_chars}"\n' for i in range(n_keys))


def test_oversize_static_metadata(load_toml: Load) -> None:
    err = config_error(load_toml, "[metadata]\n" + _filler(5, 1000))
    assert err.key == "metadata"
    assert f"over {MAX_METADATA_BYTES}" in err.message


def test_metadata_that_tagging_would_overflow_is_a_startup_error(load_toml: Load) -> None:
    """The derived keys (captured_at, agent_version) are added to every file: a config that
    leaves no room for them would hold every file at runtime instead of failing at start."""
    static = {f"k{i}": "v" * 800 for i in range(4)}
    base = len(encode_metadata({**static, "device_id": "pi", "last": ""}))
    static["last"] = "v" * (MAX_METADATA_BYTES - base)  # exactly at the limit with device_id
    body = '[device]\nid = "pi"\n[metadata]\n' + "".join(
        f'{k} = "{v}"\n' for k, v in static.items()
    )
    err = config_error(load_toml, body)
    assert err.key == "metadata"
    assert f"over {MAX_METADATA_BYTES}" in err.message


def test_metadata_just_small_enough_is_sendable(load_toml: Load) -> None:
    cfg = load_toml('[device]\nid = "pi"\n[metadata]\nsite = "north"\n')
    tagged = tag(Path("/x/a.wav"), cfg, mtime=0.0)
    assert tagged.metadata["site"] == "north"


def test_watch_metadata_counts_towards_the_size_limit(load_toml: Load, watch_dir: Path) -> None:
    meta = ", ".join(f'w{i} = "{"v" * 1000}"' for i in range(3))
    body = "[metadata]\n" + _filler(2, 1000) + f'[[watch]]\npath = "in"\nmetadata = {{ {meta} }}\n'
    err = config_error(load_toml, body)
    assert err.key == "watch[0].metadata"
    assert f"over {MAX_METADATA_BYTES}" in err.message


def test_too_many_static_metadata_keys(load_toml: Load) -> None:
    err = config_error(load_toml, "[metadata]\n" + _filler(70, 1))
    assert err.key == "metadata"
    assert "more than 64 keys" in err.message


# -- the CLI turns a config error into exit status 78 --------------------------------------


@pytest.mark.parametrize("command", ["run", "status"])
def test_cli_exits_78_for_a_broken_config(
    write_toml: Write, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    path = write_toml('[ingestion]\nconcurrency = "many"\n')
    assert cli.main([command, "--config", str(path)]) == EX_CONFIG == 78
    err = capsys.readouterr().err
    assert err.startswith(f"edge-uploader: config error: {path}: ingestion.concurrency: ")
    assert "expected a whole number from 1 to 64" in err


def test_cli_exits_78_for_invalid_toml(
    write_toml: Write, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_toml("this is = = not toml")
    assert cli.main(["run", "--config", str(path)]) == 78
    assert f"{path}: not valid TOML" in capsys.readouterr().err


def test_cli_exits_78_without_an_api_key(
    write_toml: Write, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_toml('[ingestion]\nurl = "http://127.0.0.1:9"\n')
    assert cli.main(["run", "--config", str(path)]) == 78
    assert "ingestion.api_key_file: no API key" in capsys.readouterr().err
