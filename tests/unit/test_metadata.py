"""Metadata rules: the exact x-metadata encoding and the limits checked before queueing."""

from __future__ import annotations

import pytest

from edge_uploader.errors import InputError
from edge_uploader.metadata import (
    MAX_KEYS,
    MAX_METADATA_BYTES,
    check_key,
    check_metadata,
    check_size,
    check_value,
    encode_metadata,
)


def test_encoding_is_compact_sorted_ascii_json() -> None:
    text = encode_metadata({"site": "Zürich", "a b": 'q"t', "emoji": "\U0001f600"})
    assert text == '{"a b":"q\\"t","emoji":"\\ud83d\\ude00","site":"Z\\u00fcrich"}'
    assert text.isascii()


def test_empty_object() -> None:
    assert encode_metadata({}) == "{}"


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (3, "metadata keys must be strings, got int"),
        ("", "metadata key must be 1 to 64 characters"),
        ("k" * 65, "metadata key must be 1 to 64 characters"),
        ("a\tb", "has control characters or edge spaces"),
        (" a", "has control characters or edge spaces"),
    ],
)
def test_bad_keys(key: object, message: str) -> None:
    with pytest.raises(InputError) as info:
        check_key(key, "sidecar")
    assert info.value.field == "sidecar"
    assert message in info.value.message


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (1, "metadata values must be strings, got int"),
        (None, "metadata values must be strings, got NoneType"),
        ("v" * 1025, "longer than 1024 characters"),
        ("a\nb", "NUL or line break"),
        ("a\rb", "NUL or line break"),
        ("a\x00b", "NUL or line break"),
    ],
)
def test_bad_values(value: object, message: str) -> None:
    with pytest.raises(InputError) as info:
        check_value(value, "metadata.site")
    assert info.value.field == "metadata.site"
    assert message in info.value.message


def test_good_key_and_value_pass_through() -> None:
    assert check_key("site", "f") == "site"
    assert check_value("v" * 1024, "f") == "v" * 1024
    assert check_value("", "f") == ""


def test_check_metadata_names_the_offending_key() -> None:
    with pytest.raises(InputError) as info:
        check_metadata({"site": "a", "rig": 3}, "sidecar.metadata")
    assert info.value.field == "sidecar.metadata.rig"


def test_check_metadata_refuses_non_objects() -> None:
    with pytest.raises(InputError, match="expected an object of strings, got list"):
        check_metadata(["a"])


def test_key_count_limit() -> None:
    check_metadata({f"k{i}": "v" for i in range(MAX_KEYS)})
    with pytest.raises(InputError, match="more than 64 keys"):
        check_metadata({f"k{i}": "v" for i in range(MAX_KEYS + 1)})


def test_size_limit_is_on_the_encoded_header() -> None:
    def sized(n: int) -> dict[str, str]:
        # {"k0":"...","k1":"...",...}: pad the last value to reach exactly n bytes
        base = {f"k{i}": "v" * 1000 for i in range(4)}
        base["z"] = ""
        base["z"] = "v" * (n - len(encode_metadata(base)))
        assert len(encode_metadata(base)) == n
        return base

    check_size(sized(MAX_METADATA_BYTES))
    with pytest.raises(InputError) as info:
        check_size(sized(MAX_METADATA_BYTES + 1), "sidecar")
    assert info.value.field == "sidecar"
    assert info.value.message == "encoded metadata is 4097 bytes, over 4096"


def test_non_ascii_counts_as_its_escaped_size() -> None:
    # each "é" is six bytes on the wire (\u00e9)
    values = {f"k{i}": "é" * 200 for i in range(4)}
    assert len(encode_metadata(values)) > MAX_METADATA_BYTES
    with pytest.raises(InputError, match="over 4096"):
        check_metadata(values)
