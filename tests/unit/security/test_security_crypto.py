"""AES-256-GCM sealing and the master key: bound to its context, never printed, strict about input."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from skylift.errors import AuthError, IntegrityError, SpecError
from skylift.security import MasterKey, create_master_key_file, decrypt, encrypt, master_key_from_env
from skylift.security.crypto import HEADER_BYTES, MAGIC

AD = b"tiny:1:model.safetensors.enc"


def test_round_trip_with_a_fresh_nonce_each_time() -> None:
    key = MasterKey.generate()
    a, b = encrypt(key, b"weights" * 100, AD), encrypt(key, b"weights" * 100, AD)
    assert a != b and a.startswith(MAGIC) and a[:HEADER_BYTES] != b[:HEADER_BYTES]
    assert decrypt(key, a, AD) == decrypt(key, b, AD) == b"weights" * 100
    assert len(a) == HEADER_BYTES + 700 + 16
    assert decrypt(key, encrypt(key, b"", AD), AD) == b""


@pytest.mark.parametrize(
    "mutate",
    [
        lambda blob: blob[:-1],  # truncated tag
        lambda blob: blob[:HEADER_BYTES] + bytes([blob[HEADER_BYTES] ^ 1]) + blob[HEADER_BYTES + 1 :],
        lambda blob: blob[: HEADER_BYTES - 1] + bytes([blob[HEADER_BYTES - 1] ^ 1]) + blob[HEADER_BYTES:],
        lambda blob: blob + b"\x00",
    ],
    ids=["truncated", "ciphertext-bit", "nonce-bit", "appended"],
)
def test_any_change_fails_authentication(mutate: object) -> None:
    key = MasterKey.generate()
    blob = encrypt(key, b"secret weights", AD)
    with pytest.raises(IntegrityError, match="authentication failed"):
        decrypt(key, mutate(blob), AD)  # type: ignore[operator]


def test_other_associated_data_or_key_fails() -> None:
    key = MasterKey.generate()
    blob = encrypt(key, b"secret", AD)
    with pytest.raises(IntegrityError, match="authentication failed"):
        decrypt(key, blob, b"tiny:2:model.safetensors.enc")
    with pytest.raises(IntegrityError, match="authentication failed"):
        decrypt(MasterKey.generate(), blob, AD)


def test_foreign_or_future_files_are_named_as_such() -> None:
    key = MasterKey.generate()
    with pytest.raises(IntegrityError, match="not a skylift encrypted file"):
        decrypt(key, b"PK\x03\x04" + b"\x00" * 64, AD)
    with pytest.raises(IntegrityError, match="not a skylift encrypted file"):
        decrypt(key, MAGIC, AD)
    blob = bytearray(encrypt(key, b"x", AD))
    blob[len(MAGIC)] = 9
    with pytest.raises(IntegrityError, match="format 9"):
        decrypt(key, bytes(blob), AD)


def test_master_key_never_prints() -> None:
    raw = os.urandom(32)
    key = MasterKey(raw)
    for text in (repr(key), str(key), f"{key}", repr([key])):
        assert "**********" in text
        assert base64.b64encode(raw).decode() not in text and raw.hex() not in text
    assert key == MasterKey(raw) and key != MasterKey.generate()
    assert len(key.key_id) == 16 and key.key_id not in raw.hex()
    with pytest.raises(SpecError, match="32 bytes, got 16"):
        MasterKey(b"x" * 16)


def test_subkeys_differ_by_purpose() -> None:
    key = MasterKey.generate()
    assert key.derive("a") != key.derive("b") and len(key.derive("a")) == 32
    assert key.check_mac(b"data", "p", key.mac(b"data", "p"))
    assert not key.check_mac(b"data", "q", key.mac(b"data", "p"))


def test_key_from_env() -> None:
    raw = os.urandom(32)
    text = base64.b64encode(raw).decode()
    assert master_key_from_env(environ={"SKYLIFT_MASTER_KEY": text}) == MasterKey(raw)
    assert master_key_from_env(environ={"SKYLIFT_MASTER_KEY": f"  {text}\n"}) == MasterKey(raw)
    assert master_key_from_env(environ={}) is None
    assert master_key_from_env(environ={"SKYLIFT_MASTER_KEY": ""}) is None


@pytest.mark.parametrize(
    ("value", "part"),
    [
        ("not base64!!", "is not valid base64"),
        (base64.b64encode(b"k" * 32).decode()[:-2], "is not valid base64"),  # bad padding
        (base64.b64encode(b"k" * 16).decode(), "decodes to 16 bytes, expected 32"),
        (base64.b64encode(b"k" * 33).decode(), "decodes to 33 bytes, expected 32"),
    ],
)
def test_bad_env_key_is_one_line_without_the_value(value: str, part: str) -> None:
    with pytest.raises(SpecError) as err:
        master_key_from_env(environ={"SKYLIFT_MASTER_KEY": value})
    message = str(err.value)
    assert message.startswith("SKYLIFT_MASTER_KEY ") and part in message and "\n" not in message
    assert value not in message and "master-create" in message


def test_key_file_is_created_0600_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "master.key"
    key = create_master_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert master_key_from_env(path, environ={}) == key
    assert master_key_from_env(str(path), environ={"SKYLIFT_MASTER_KEY": "garbage"}) == key  # file wins
    assert [p.name for p in path.parent.iterdir()] == ["master.key"]  # no temp file left behind


def test_key_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    create_master_key_file(path)
    before = path.read_bytes()
    with pytest.raises(SpecError, match="already exists; refusing to overwrite"):
        create_master_key_file(path)
    assert path.read_bytes() == before


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    create_master_key_file(path)
    path.chmod(0o644)
    with pytest.raises(AuthError, match=r"accessible by other users \(mode 0644\); run `chmod 600"):
        master_key_from_env(path)


@pytest.mark.parametrize(
    ("content", "part"),
    [
        (b"short", "not valid base64"),
        (base64.b64encode(b"k" * 8), "decodes to 8 bytes"),
        (b"\xff\xfe", "base64"),
    ],
)
def test_bad_key_file_content(tmp_path: Path, content: bytes, part: str) -> None:
    path = tmp_path / "k"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(SpecError, match=part):
        master_key_from_env(path)


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="not found"):
        master_key_from_env(tmp_path / "nope")
    with pytest.raises(SpecError, match="not a regular file"):
        master_key_from_env(tmp_path)
