"""Encryption at rest: weights sealed under the master key; no key, a wrong key or tampering fail cleanly."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from skylift.errors import AuthError, IntegrityError
from skylift.registry import Registry, Verification, load_model
from skylift.registry import _manifest as manifest_mod
from skylift.registry._artifact import PLAIN_WITH_KEY
from skylift.security import MasterKey
from tests.unit.registry.conftest import make_tiny, snapshot


def _rewrite_manifest(folder: Path, key: MasterKey | None = None) -> None:
    """Re-hash every file into MANIFEST.json, as an attacker (or, with `key`, an insider) could."""
    blobs = {p.name: p.read_bytes() for p in folder.iterdir() if p.name != "MANIFEST.json"}
    manifest = manifest_mod.build(blobs)
    if key is not None:
        info = json.loads(blobs["model.json"])
        payload = manifest_mod.mac_payload(info["name"], info["version"], manifest["files"])
        manifest["mac"] = key.mac(payload, manifest_mod.MAC_PURPOSE)
    (folder / "MANIFEST.json").write_text(json.dumps(manifest))


def test_encrypted_version_round_trips(sealed: Registry, key: MasterKey) -> None:
    tiny = make_tiny()
    v = sealed.register("tiny", tiny.state, tiny.meta)
    assert sorted(p.name for p in v.path.iterdir()) == [
        "MANIFEST.json",
        "model.json",
        "model.safetensors.enc",
    ]
    info = json.loads((v.path / "model.json").read_text())
    assert info["encrypted"] is True and info["encryption"] == {
        "algorithm": "AES-256-GCM",
        "key_id": key.key_id,
    }
    blob = (v.path / "model.safetensors.enc").read_bytes()
    plain = tiny.state["dense_0.weight"].numpy().tobytes()
    assert plain[:64] not in blob and b"dense_0.weight" not in blob  # neither values nor names leak
    x = torch.randn(4, 8)
    with torch.no_grad():
        assert torch.equal(sealed.load("tiny").module(x), tiny.module(x))
    assert sealed.verify("tiny") == []


def test_no_key_file_or_env_holds_the_key(sealed: Registry, key: MasterKey) -> None:
    tiny = make_tiny()
    sealed.register("tiny", tiny.state, tiny.meta)
    raw = key._raw
    for path in sealed.root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert raw not in data and base64.b64encode(raw) not in data


def test_loading_without_the_key_is_an_auth_error(sealed: Registry, tmp_path: Path) -> None:
    tiny = make_tiny()
    sealed.register("tiny", tiny.state, tiny.meta)
    plain = Registry(tmp_path / "home")
    with pytest.raises(
        AuthError, match="tiny:1 is encrypted: set SKYLIFT_MASTER_KEY or pass --key-file"
    ) as info:
        plain.load("tiny")
    assert info.value.exit_code == 2  # a missing input, unlike a wrong key (exit 1)
    assert plain.verify("tiny") == []  # hashes are checked without the key (but not authenticated)
    assert plain.info("tiny")["encrypted"] is True


def test_wrong_key_is_an_auth_error_naming_both_key_ids(
    sealed: Registry, key: MasterKey, tmp_path: Path
) -> None:
    tiny = make_tiny()
    sealed.register("tiny", tiny.state, tiny.meta)
    other = MasterKey.generate()
    with pytest.raises(AuthError) as err:
        Registry(tmp_path / "home", other).load("tiny")
    assert key.key_id in str(err.value) and other.key_id in str(err.value)


def test_tampered_ciphertext_with_rewritten_manifest_fails_authentication(sealed: Registry) -> None:
    tiny = make_tiny()
    v = sealed.register("tiny", tiny.state, tiny.meta)
    enc = v.path / "model.safetensors.enc"
    data = bytearray(enc.read_bytes())
    data[100] ^= 0xFF
    enc.write_bytes(bytes(data))
    _rewrite_manifest(v.path)  # hashes match again, but the MAC cannot be forged without the key
    with pytest.raises(IntegrityError, match=r"MANIFEST\.json: authentication failed"):
        sealed.load("tiny")
    assert sealed.verify("tiny") == [
        "MANIFEST.json: authentication failed (the manifest or model.json was rewritten)"
    ]


def test_tampered_ciphertext_fails_decryption_even_past_the_manifest(
    sealed: Registry, key: MasterKey
) -> None:
    tiny = make_tiny()
    v = sealed.register("tiny", tiny.state, tiny.meta)
    enc = v.path / "model.safetensors.enc"
    data = bytearray(enc.read_bytes())
    data[-5] ^= 0x01  # in the GCM tag
    enc.write_bytes(bytes(data))
    _rewrite_manifest(v.path, key)  # even an insider with the key cannot make the old tag fit
    with pytest.raises(IntegrityError, match=r"tiny:1: model.safetensors.enc: authentication failed"):
        sealed.load("tiny")
    (problem,) = sealed.verify("tiny")
    assert problem.startswith("model.safetensors.enc: authentication failed")


def test_encrypted_file_copied_to_another_version_fails_to_decrypt(sealed: Registry, key: MasterKey) -> None:
    a, b = make_tiny(0), make_tiny(1)
    v1 = sealed.register("tiny", a.state, a.meta)
    v2 = sealed.register("tiny", b.state, b.meta)
    (v2.path / "model.safetensors.enc").write_bytes((v1.path / "model.safetensors.enc").read_bytes())
    _rewrite_manifest(v2.path, key)  # only the associated data (name, version, file) is left to catch it
    with pytest.raises(IntegrityError, match=r"tiny:2: model\.safetensors\.enc: authentication failed"):
        sealed.load("tiny:2")
    assert torch.equal(sealed.load("tiny:1").module.state_dict()["dense_0.weight"], a.state["dense_0.weight"])


def test_with_a_master_key_a_plain_version_is_refused(registry: Registry, sealed: Registry) -> None:
    tiny = make_tiny()
    registry.register("tiny", tiny.state, tiny.meta)  # registered before the key was set
    sealed.register("tiny", tiny.state, tiny.meta)
    before = snapshot(sealed.root)
    message = r"^tiny:1 is not encrypted although a master key is set \(a plain version could have been "
    with pytest.raises(IntegrityError, match=message + r".*re-register it with the key, or use it without"):
        sealed.load("tiny:1")
    with pytest.raises(IntegrityError, match=message):
        sealed.info("tiny:1")
    assert sealed.verify("tiny:1") == [PLAIN_WITH_KEY]
    assert registry.load("tiny:1").info["encrypted"] is False  # without the key it is a plain model
    assert sealed.load("tiny:2").info["encrypted"] is True
    assert snapshot(sealed.root) == before


def test_a_plain_version_swapped_in_for_an_encrypted_one_is_refused(
    sealed: Registry, key: MasterKey, tmp_path: Path
) -> None:
    """The downgrade: a complete, self-consistent plain folder (own model.json and manifest) put in
    place of an encrypted version. Its hashes all match, so only the master key can tell."""
    good, evil = make_tiny(0), make_tiny(1)
    v = sealed.register("tiny", good.state, good.meta)
    forged = Registry(tmp_path / "attacker").register("tiny", evil.state, evil.meta)
    shutil.rmtree(v.path)
    shutil.copytree(forged.path, v.path)
    assert Registry(sealed.root.parent).verify("tiny:1") == []  # consistent: no key, no way to tell
    before = snapshot(sealed.root)
    with pytest.raises(IntegrityError, match=r"^tiny:1 is not encrypted although a master key is set"):
        sealed.load("tiny:1")
    with pytest.raises(IntegrityError, match=r"^tiny:1 is not encrypted although a master key is set"):
        sealed.export("tiny:1", "onnx", tmp_path / "out.onnx")
    result = sealed.check("tiny:1")
    assert result.problems == (PLAIN_WITH_KEY,) and not result.ok and not result.authenticated
    with pytest.raises(IntegrityError, match="not encrypted although a master key is set"):
        load_model("tiny:1", home=sealed.root.parent, master_key=key)
    assert snapshot(sealed.root) == before and not (tmp_path / "out.onnx").exists()


def test_without_the_key_an_encrypted_version_is_checked_by_hash_only(
    sealed: Registry, key: MasterKey, tmp_path: Path
) -> None:
    tiny = make_tiny()
    v = sealed.register("tiny", tiny.state, tiny.meta)
    plain = Registry(tmp_path / "home")
    assert sealed.check("tiny") == Verification("tiny:1", (), encrypted=True, authenticated=True)
    assert plain.check("tiny") == Verification("tiny:1", (), encrypted=True, authenticated=False)
    assert plain.info("tiny")["authenticated"] is False and sealed.info("tiny")["authenticated"] is True
    # A forger without the key rewrites model.json and the manifest: hashes match again, the MAC does not.
    info = json.loads((v.path / "model.json").read_text())
    info["metrics"] = {"val_accuracy": 0.999}
    (v.path / "model.json").write_text(json.dumps(info))
    _rewrite_manifest(v.path)
    assert plain.check("tiny").ok and not plain.check("tiny").authenticated
    with pytest.raises(IntegrityError, match=r"^tiny:1: MANIFEST\.json: authentication failed"):
        sealed.info("tiny")
    assert not sealed.check("tiny").ok


def test_load_model_takes_the_key_from_the_environment(
    sealed: Registry, key: MasterKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiny = make_tiny()
    sealed.register("tiny", tiny.state, tiny.meta)
    sealed.promote("tiny", 1, "production")
    monkeypatch.setenv("SKYLIFT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SKYLIFT_MASTER_KEY", raising=False)
    with pytest.raises(AuthError):
        load_model("tiny@production")
    monkeypatch.setenv("SKYLIFT_MASTER_KEY", base64.b64encode(key._raw).decode())
    assert load_model("tiny@production").ref == "tiny:1"
    assert load_model("tiny:1", home=tmp_path / "home", master_key=key._raw).ref == "tiny:1"
    assert hashlib.sha256(key._raw).hexdigest() not in repr(load_model("tiny").info)
