"""A chat template stored with the model: trained with `data.chat_template` (chatml, or Jinja2),
recorded in model.json, and the prompt a real `skylift serve` builds from chat messages; imported
Hugging Face folders keep theirs; a template that cannot render stops training in one line."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from skylift.cli import main
from skylift.data._tokenizer import TextTokenizer
from skylift.errors import DataError
from skylift.registry import Registry
from skylift.security.apikeys import KeyStore
from tests.integration.serve_helpers import Server, running
from tests.integration.test_import_hf import minilm
from tests.integration.tiny_lm import train_tiny_lm

pytestmark = pytest.mark.slow

STRICT = (  # Gemma-like: no system role, and the assistant's turn named "model"
    "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}<start_of_turn>{{ 'model' if m.role == 'assistant' else m.role }}\n{{ m.content }}"
    "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who were there?"}]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("home")
    # 256 tokens of context: a template's markup costs many tokens of a 300-token vocabulary
    train_tiny_lm(home, "chatml-lm", chat_template="chatml", block_size=256)
    train_tiny_lm(home, "strict-lm", chat_template=STRICT, block_size=256)
    return home


@pytest.fixture(scope="module")
def server(home: Path) -> Iterator[Server]:
    key, _ = KeyStore(home / "keys.json").create("app", ("predict",), rate_limit=1e6)
    with running(home, "chatml-lm", "strict-lm", "--replicas", "1", key=key) as s:
        yield s


def _tokens(home: Path, model: str, text: str) -> int:
    ids, _ = TextTokenizer.from_json(Registry(home).load(model).tokenizer or "").encode_pieces([text])
    return len(ids)


def _client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key=server.key, max_retries=0)


def test_the_template_is_recorded_with_the_model(home: Path) -> None:
    assert Registry(home).info("chatml-lm")["data"]["chat_template"] == "chatml"
    assert Registry(home).info("strict-lm")["data"]["chat_template"] == STRICT


def test_a_chatml_model_is_prompted_through_chatml(home: Path, server: Server) -> None:
    prompt = (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWho were there?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    with _client(server) as client:
        answer = client.chat.completions.create(model="chatml-lm", messages=CHAT, max_tokens=4)  # type: ignore[arg-type]
        stream = client.chat.completions.create(
            model="chatml-lm",
            messages=CHAT,  # type: ignore[arg-type]
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True},
        )
        usage = list(stream)[-1].usage
    assert answer.usage is not None and answer.usage.prompt_tokens == _tokens(home, "chatml-lm", prompt)
    assert usage is not None and usage.prompt_tokens == answer.usage.prompt_tokens
    plain = "system: Be brief.\nuser: Who were there?\nassistant:"
    assert answer.usage.prompt_tokens != _tokens(home, "chatml-lm", plain)


def test_a_jinja_template_renders_and_refuses_in_openai_s_shape(home: Path, server: Server) -> None:
    user = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}, CHAT[1]]
    prompt = (
        "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n"
        "<start_of_turn>user\nWho were there?<end_of_turn>\n<start_of_turn>model\n"
    )
    with _client(server) as client:
        answer = client.chat.completions.create(model="strict-lm", messages=user, max_tokens=2)  # type: ignore[arg-type]
    assert answer.usage is not None and answer.usage.prompt_tokens == _tokens(home, "strict-lm", prompt)
    body = json.dumps({"model": "strict-lm", "messages": CHAT, "max_tokens": 2}).encode()
    status, _, raw = server.request("POST", "/v1/chat/completions", body)
    error = json.loads(raw)["error"]
    assert status == 400 and error["type"] == "invalid_request_error"
    assert error["message"] == "the model's chat template failed on these messages: System role not supported"


def test_a_template_that_cannot_render_stops_training_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "lm.yaml"
    spec.write_text(
        "name: lm\ntask: language_modeling\n"
        "data: {train: corpus, tokenizer: {train: bpe, vocab_size: 300}, block_size: 8}\n"
        "model: {layers: [{token_embedding: {dim: 8}}, {lm_head: {}}]}\n"
    )
    code = main(["train", str(spec), "--home", str(tmp_path), "--set", "data.chat_template={{ messages"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1
    assert "data.chat_template: not a valid Jinja2 template" in err


def test_an_imported_folder_keeps_its_chat_template(tmp_path: Path) -> None:
    from skylift.registry._import import read_folder

    folder = tmp_path / "minilm"
    shutil.copytree(minilm(), folder)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    template = "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}"
    config_path.write_text(
        json.dumps({**config, "chat_template": [{"name": "default", "template": template}]})
    )
    assert read_folder(folder).data["chat_template"] == template
    config_path.write_text(json.dumps({**config, "chat_template": "{% for m in messages %}"}))
    with pytest.raises(DataError) as err:
        read_folder(folder)
    assert str(err.value).startswith(f"{config_path}: chat_template not a valid Jinja2 template")
    config_path.write_text(json.dumps(config))
    assert "chat_template" not in read_folder(folder).data
