"""API key store: constant-time checks, and writers that never lose each other's keys."""

from __future__ import annotations

import hmac
import multiprocessing
from pathlib import Path

import pytest

from skylift.errors import AuthError, SpecError
from skylift.security import apikeys
from skylift.security.apikeys import KeyStore


def test_secrets_are_compared_with_hmac_compare_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = KeyStore(tmp_path / "keys.json")
    key, info = store.create("app", ("predict",))
    calls: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(apikeys.hmac, "compare_digest", spy)
    assert store.verify(key).name == "app"
    assert len(calls) == 1 and calls[0][1] == store._entries[info.key_id]["sha256"]
    with pytest.raises(AuthError):
        store.verify(key[:-1] + ("A" if key[-1] != "A" else "B"))  # right id, wrong secret
    with pytest.raises(AuthError):
        store.verify("sk_00000000_" + "A" * 43)  # unknown id: hashed and compared all the same
    assert len(calls) == 3
    # The decision is compare_digest's: with it answering False, the right key is refused.
    monkeypatch.setattr(apikeys.hmac, "compare_digest", lambda a, b: False)
    with pytest.raises(AuthError):
        store.verify(key)


def _create_many(path: str, prefix: str, count: int) -> None:
    store = KeyStore(Path(path))  # one long-lived store each, as a server or script would hold
    for i in range(count):
        store.create(f"{prefix}-{i}", ("predict",))


def test_concurrent_creates_lose_no_key(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_create_many, args=(str(path), p, 15)) for p in ("a", "b", "c")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    names = {k.name for k in KeyStore(path).infos()}
    assert names == {f"{p}-{i}" for p in "abc" for i in range(15)}
    with pytest.raises(SpecError, match="already exists"):
        KeyStore(path).create("a-0", ("predict",))


def test_a_corrupt_file_is_one_error_and_the_keys_read_before_stay(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    store = KeyStore(path)
    key, _ = store.create("app", ("predict",))
    path.write_text('{"keys": [{"id": "x", "salt": "not hex"}]}')
    with pytest.raises(SpecError, match="not a skylift key file"):
        store.refresh()
    assert store.refresh() is False  # not re-read until the file changes again
    assert store.verify(key).name == "app"
    with pytest.raises(SpecError, match="not a skylift key file"):
        KeyStore(path)
