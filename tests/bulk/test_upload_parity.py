"""``upload`` speaks the habits of ``edge-impulse-uploader`` and the Edge Impulse Python
SDK: ``--metadata '<json>'``, ``EI_INGESTION_ENDPOINT``, ``DIR/info.labels``,
``training/`` and ``testing/`` folders (``--category-from-folder``) and ``--json``.

Each runs the real command in a child process against the real local server.
"""

from __future__ import annotations

import json
from pathlib import Path

from edge_uploader.localserver import LocalIngestionServer

from .helpers import index, make_files, run_cli


def _by_name(server: LocalIngestionServer) -> dict[str, dict]:
    return {line["fileName"]: line for line in index(server.data_dir)}


def test_metadata_takes_a_json_object_as_the_uploader_does(
    tmp_path: Path, env: dict[str, str], server: LocalIngestionServer
) -> None:
    make_files(tmp_path / "d", 2)
    args = ["upload", "--metadata", '{"site": "A", "rig": "r 2"}', "--metadata", "mic=left"]
    done = run_cli([*args, str(tmp_path / "d")], env)
    assert done.returncode == 0, done.stdout + done.stderr
    for line in index(server.data_dir):
        assert {k: line["metadata"][k] for k in ("site", "rig", "mic")} == {
            "site": "A", "rig": "r 2", "mic": "left",
        }  # fmt: skip


def test_metadata_json_values_must_be_strings(tmp_path: Path, env: dict[str, str]) -> None:
    make_files(tmp_path / "d", 1)
    for bad, why in (('{"n": 1}', "must be strings, got int"), ("{nope", "not valid JSON")):
        done = run_cli(["upload", "--metadata", bad, str(tmp_path / "d")], env)
        assert done.returncode == 78 and why in done.stderr, done.stderr


def test_the_sdks_endpoint_variable_is_accepted(
    tmp_path: Path, env: dict[str, str], server: LocalIngestionServer
) -> None:
    make_files(tmp_path / "d", 2)
    sdk = {k: v for k, v in env.items() if k != "EI_INGESTION_URL"}
    sdk["EI_INGESTION_ENDPOINT"] = server.url
    done = run_cli(["upload", str(tmp_path / "d")], {**sdk, "EI_INGESTION_URL": ""})
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(index(server.data_dir)) == 2
    bad = run_cli(
        ["upload", str(tmp_path / "d")],
        {**sdk, "EI_INGESTION_URL": "", "EI_INGESTION_ENDPOINT": "ftp://x"},
    )
    assert bad.returncode == 78 and "EI_INGESTION_ENDPOINT" in bad.stderr
    make_files(tmp_path / "e", 1)  # both set: EI_INGESTION_URL wins
    both = {**sdk, "EI_INGESTION_URL": server.url, "EI_INGESTION_ENDPOINT": "http://127.0.0.1:9"}
    assert run_cli(["upload", str(tmp_path / "e")], both).returncode == 0


def test_a_folder_with_info_labels_is_uploaded_as_it_describes(
    tmp_path: Path, env: dict[str, str], server: LocalIngestionServer
) -> None:
    root = tmp_path / "export"
    make_files(root / "training", 1, prefix="idle")
    make_files(root / "testing", 1, prefix="wave")
    files = [
        {"path": "training/idle.00000.wav", "category": "training",
         "label": {"type": "label", "label": "calm"}, "metadata": {"site": "A"}},
        {"path": "testing/wave.00000.wav", "category": "testing",
         "label": {"type": "unlabeled"}},
    ]  # fmt: skip
    (root / "info.labels").write_text(json.dumps({"version": 1, "files": files}))
    done = run_cli(["upload", str(root)], env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"using {root / 'info.labels'}" in done.stderr
    got = _by_name(server)
    assert (got["idle.00000.wav"]["label"], got["idle.00000.wav"]["metadata"]["site"]) == (
        "calm", "A",
    )  # fmt: skip
    assert got["wave.00000.wav"]["category"] == "testing"
    assert got["wave.00000.wav"]["label"] is None


def test_category_from_training_and_testing_folders(
    tmp_path: Path, env: dict[str, str], server: LocalIngestionServer
) -> None:
    root = tmp_path / "data"
    make_files(root / "training" / "idle", 2, prefix="idle")
    make_files(root / "testing", 2, prefix="wave")
    make_files(root / "anomaly", 1, prefix="odd")
    make_files(root / "other", 1, prefix="misc")
    args = ["upload", "--category-from-folder", "--category", "validation", str(root)]
    done = run_cli(args, env)
    assert done.returncode == 0, done.stdout + done.stderr
    cats = {name: line["category"] for name, line in _by_name(server).items()}
    assert cats == {
        "idle.00000.wav": "training", "idle.00001.wav": "training",
        "wave.00000.wav": "testing", "wave.00001.wav": "testing",
        "odd.00000.wav": "anomaly", "misc.00000.wav": "validation",
    }  # fmt: skip
    only = run_cli(["upload", "--category-from-folder", str(root / "testing")], env)
    assert only.returncode == 0  # the named folder itself counts


def test_json_prints_the_summary_as_one_object(
    tmp_path: Path, env: dict[str, str], server: LocalIngestionServer
) -> None:
    make_files(tmp_path / "d", 3)
    done = run_cli(["upload", "--json", str(tmp_path / "d")], env)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["outcome"] == "done" and doc["exit_status"] == 0
    assert doc["files"] == 3 and doc["states"]["delivered"]["files"] == 3
    assert doc["sent_this_run"]["files"] == 3 and doc["advice"] is None
    refused = run_cli(["upload", "--json", str(tmp_path / "d")], {**env, "EI_API_KEY": "ei_x"})
    doc = json.loads(refused.stdout)  # nothing left to send: the batch is delivered
    assert doc["outcome"] == "done"
    make_files(tmp_path / "e", 2)
    refused = run_cli(["upload", "--json", str(tmp_path / "e")], {**env, "EI_API_KEY": "ei_x"})
    doc = json.loads(refused.stdout)
    assert (doc["outcome"], doc["exit_status"]) == ("refused", 77)
    assert "Invalid API key" in doc["last_error"] and "fix the API key" in doc["advice"]
