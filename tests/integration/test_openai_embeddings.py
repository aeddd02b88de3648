"""POST /v1/embeddings and KServe V2 on an imported MiniLM, over TLS with API keys, queried with the
official `openai` client and `tritonclient`: equal to sentence-transformers' encode within 1e-5."""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openai
import pytest
import tritonclient.http as triton
import zstandard

from skylift.registry import Registry
from skylift.security import MasterKey
from skylift.security.apikeys import KeyStore
from tests.integration.serve_helpers import Server, running
from tests.integration.test_import_hf import minilm

pytestmark = pytest.mark.slow

TEXTS = ["The cat sits outside", "A man is playing guitar", "naïve café 東京 🚀", "", "word " * 300]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("home")
    raw = os.urandom(32)
    (home / "master.b64").write_text(base64.b64encode(raw).decode())
    Registry(home, MasterKey(raw)).import_folder(minilm(), "minilm")
    return home


@pytest.fixture(scope="module")
def keys(home: Path) -> dict[str, str]:
    store = KeyStore(home / "keys.json")
    return {
        "app": store.create("app", ("predict",), rate_limit=1000)[0],
        "metrics": store.create("ops", ("metrics",))[0],
        "slow": store.create("slow", ("predict",), rate_limit=1)[0],
    }


@pytest.fixture(scope="module")
def server(home: Path, keys: dict[str, str]) -> Iterator[Server]:
    env = {"SKYLIFT_MASTER_KEY": (home / "master.b64").read_text()}
    args = ("minilm", "--replicas", "2", "--tls-self-signed", "--max-queue-rows", "64")
    with running(home, *args, key=keys["app"], ready=False, env=env) as s:
        s.tls = ssl.create_default_context(cafile=str(home / "tls" / "tls-cert.pem"))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if s.request("GET", "/v2/health/ready")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        yield s


def _client(home: Path, server: Server, key: str) -> openai.OpenAI:
    http = openai.DefaultHttpxClient(
        verify=ssl.create_default_context(cafile=str(home / "tls" / "tls-cert.pem"))
    )
    return openai.OpenAI(
        base_url=f"https://127.0.0.1:{server.port}/v1", api_key=key, http_client=http, max_retries=0
    )


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return np.asarray(SentenceTransformer(str(minilm()), device="cpu").encode(TEXTS))


@pytest.mark.parametrize("encoding_format", ["float", "base64"])
def test_openai_client_embeddings_equal_sentence_transformers(
    home: Path, server: Server, keys: dict[str, str], reference: np.ndarray, encoding_format: str
) -> None:
    with _client(home, server, keys["app"]) as client:
        answer = client.embeddings.create(model="minilm", input=TEXTS, encoding_format=encoding_format)  # type: ignore[arg-type]
        vectors = [d.embedding for d in sorted(answer.data, key=lambda d: d.index)]
        if encoding_format == "base64":  # asked for by the caller, the client hands the strings over
            vectors = [np.frombuffer(base64.b64decode(v), dtype="<f4") for v in vectors]  # type: ignore[arg-type]
        np.testing.assert_allclose(np.array(vectors), reference, atol=1e-5)
        from skylift.data._tokenizer import TextTokenizer

        _, lengths = TextTokenizer.from_file(minilm()).encode_batch(TEXTS, 256)
        assert answer.usage.prompt_tokens == answer.usage.total_tokens == int(lengths.sum())
        assert answer.model == "minilm"
        one = client.embeddings.create(model="minilm", input=TEXTS[1])  # the client's own base64 default
        np.testing.assert_allclose(one.data[0].embedding, reference[1], atol=1e-5)
        assert [m.id for m in client.models.list().data] == ["minilm"]
        assert client.models.retrieve("minilm").owned_by == "skylift"


def test_tritonclient_bytes_on_the_same_model(
    home: Path, server: Server, keys: dict[str, str], reference: np.ndarray
) -> None:
    client = triton.InferenceServerClient(
        f"127.0.0.1:{server.port}", ssl=True, ssl_options={"ca_certs": str(home / "tls" / "tls-cert.pem")}
    )
    headers = {"Authorization": f"Bearer {keys['app']}"}
    inp = triton.InferInput("text", [len(TEXTS)], "BYTES")
    inp.set_data_from_numpy(np.array([t.encode() for t in TEXTS], dtype=object), binary_data=True)
    try:
        result = client.infer("minilm", [inp], headers=headers)
    finally:
        client.close()
    np.testing.assert_allclose(result.as_numpy("embedding"), reference, atol=1e-5)


def _post(
    server: Server, body: object, key: str | None, headers: dict[str, str] | None = None
) -> tuple[int, dict, dict]:
    h = {
        "Content-Type": "application/json",
        **({"Authorization": f"Bearer {key}"} if key else {}),
        **(headers or {}),
    }
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    status, head, answer = server.request("POST", "/v1/embeddings", raw, h)
    if head.get("content-encoding") == "zstd":
        answer = zstandard.ZstdDecompressor().decompress(answer, max_output_size=1 << 24)
    return status, head, json.loads(answer)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"model": "nope", "input": "x"}, 404, "unknown model 'nope'"),
        ({"input": "x"}, 400, "'model' is required"),
        ({"model": "minilm", "input": []}, 400, "non-empty list"),
        ({"model": "minilm", "input": [[1, 2, 3]]}, 400, "token ids are not supported"),
        ({"model": "minilm", "input": "x", "stream": True}, 400, "'stream' is not supported"),
        ({"model": "minilm", "input": "x", "encoding_format": "int8"}, 400, "float or base64"),
        ({"model": "minilm", "input": "x", "dimensions": 128}, 400, "'dimensions' must be 384"),
        ({"model": "minilm", "input": ["x"] * 65}, 413, "over the server's limit of 64"),
        (b"{not json", 400, "not valid JSON"),
        (b'{"model": "minilm", "input": "\xff\xfe"}', 400, "not valid JSON"),
        ([1, 2], 400, "JSON object"),
    ],
)
def test_bad_embedding_requests_get_openai_errors(
    server: Server, keys: dict[str, str], body: object, status: int, message: str
) -> None:
    got, _, answer = _post(server, body, keys["app"])
    assert got == status and message in answer["error"]["message"] and "\n" not in answer["error"]["message"]
    assert set(answer["error"]) == {"message", "type", "param", "code"}
    assert _post(server, {"model": "minilm", "input": "still up"}, keys["app"])[0] == 200


def test_keys_scopes_rate_limits_and_compression_hold(
    home: Path, server: Server, keys: dict[str, str]
) -> None:
    status, head, answer = _post(server, {"model": "minilm", "input": "x"}, None)
    assert status == 401 and answer["error"]["type"] == "authentication_error" and "www-authenticate" in head
    with _client(home, server, "sk_00000000_" + "A" * 43) as bad, pytest.raises(openai.AuthenticationError):
        bad.embeddings.create(model="minilm", input="x")
    with (
        _client(home, server, keys["metrics"]) as ops,
        pytest.raises(openai.PermissionDeniedError, match="lacks"),
    ):
        ops.embeddings.create(model="minilm", input="x")
    slow = [_post(server, {"model": "minilm", "input": "x"}, keys["slow"]) for _ in range(4)]
    limited = [s for s in slow if s[0] == 429]
    assert limited and "retry-after" in limited[0][1] and limited[0][2]["error"]["type"] == "rate_limit_error"
    status, head, answer = _post(
        server, {"model": "minilm", "input": TEXTS}, keys["app"], {"Accept-Encoding": "zstd"}
    )
    assert status == 200 and head["content-encoding"] == "zstd" and len(answer["data"]) == len(TEXTS)
    audit = (home / "audit.log").read_text()
    assert "denied" in audit and "/v1/embeddings" in audit


def test_the_serving_process_does_not_import_transformers(home: Path) -> None:
    """The embedder runs on skylift's own BERT: a replica loading it never imports transformers."""
    code = (
        "import sys; from pathlib import Path\n"
        "from skylift.security import master_key_from_env\n"
        "from skylift.serve.config import ServeConfig\n"
        "from skylift.serve.metrics import Metrics\n"
        "from skylift.serve.repository import Repository\n"
        f"c = ServeConfig(models=('minilm',), home=Path({str(home)!r}), state_dir=Path({str(home)!r}))\n"
        "Repository(c, Metrics(0, None))._load('minilm', 1, 'minilm')\n"
        "hf = ('transformers', 'sentence_transformers')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in hf))\n"
    )
    env = {**os.environ, "SKYLIFT_MASTER_KEY": (home / "master.b64").read_text()}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
