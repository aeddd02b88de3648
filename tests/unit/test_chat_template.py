"""Chat templates: the named ones, Jinja2 in a sandbox, the older format strings, and the spec field
`data.chat_template` refusing what would not render, in one line naming the field."""

from __future__ import annotations

import pytest

from skylift._chat_template import SAMPLE, ChatTemplate, ChatTemplateError, template_problem
from skylift.errors import SpecError
from skylift.spec import parse_spec

CHAT = [("system", "Be brief."), ("user", "Who were there?")]


def test_plain_is_role_lines_then_assistant() -> None:
    assert ChatTemplate("plain").render(CHAT) == "system: Be brief.\nuser: Who were there?\nassistant:"
    assert ChatTemplate.recorded(None).render(CHAT) == ChatTemplate("plain").render(CHAT)


def test_chatml_is_hugging_face_s_chatml() -> None:
    assert ChatTemplate("chatml").render(CHAT) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWho were there?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_a_jinja_template_gets_hugging_face_s_variables() -> None:
    source = (
        "{{ bos_token }}{% for m in messages %}[{{ m.role | upper }}] {{ m['content'] }}\n"
        "{% endfor %}{% if add_generation_prompt %}[ASSISTANT]{{ eos_token }}{% endif %}"
    )
    template = ChatTemplate(source, bos_token="<s>", eos_token="</s>")
    assert template.name == "jinja"
    assert template.render(CHAT) == "<s>[SYSTEM] Be brief.\n[USER] Who were there?\n[ASSISTANT]</s>"


def test_raise_exception_refuses_a_conversation_in_one_line() -> None:
    source = (
        "{% for m in messages %}{% if m.role == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}{{ m.content }}{% endfor %}"
    )
    template = ChatTemplate(source)
    assert template.render([("user", "hi")]) == "hi"
    with pytest.raises(ChatTemplateError) as err:
        template.render(CHAT)
    assert str(err.value) == "the model's chat template failed on these messages: System role not supported"
    assert issubclass(ChatTemplateError, SpecError)  # the server answers it 400


@pytest.mark.parametrize(
    "source",
    [
        "{{ messages.__class__.__mro__[1].__subclasses__() }}",  # escape to Python: the sandbox says no
        "{% for m in messages %}{{ m.content }}{% set _ = messages.append(m) %}{% endfor %}",  # mutation
    ],
)
def test_the_sandbox_refuses_unsafe_templates(source: str) -> None:
    with pytest.raises(ChatTemplateError, match=r"unsafe|immutable|not safely callable"):
        ChatTemplate(source).render(CHAT)


def test_the_older_format_strings_still_render() -> None:
    template = ChatTemplate.recorded({"message": "<{role}>{content}</{role}>", "assistant": "<assistant>"})
    assert template.render(CHAT) == "<system>Be brief.</system><user>Who were there?</user><assistant>"
    assert ChatTemplate.recorded({}).render(CHAT) == ChatTemplate("plain").render(CHAT)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("plain", None),
        ("chatml", None),
        ("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}", None),
        ("chatm", "must be plain, chatml or a Jinja2 template of messages ({{ }} / {% %}), got 'chatm'"),
        ("{{ messages", "not a valid Jinja2 template: unexpected end of template"),
        ("{% for m in messages %}{{ m.role }}{% endfor %}", "its rendering leaves out the messages' content"),
        ("{{ raise_exception('never') }}", "it fails on a sample chat: never, got"),
        ("{{ messages[0].content.nope() }}", "it fails on a sample chat: "),
    ],
)
def test_template_problems_are_one_line(value: str, problem: str | None) -> None:
    found = template_problem(value)
    if problem is None:
        assert found is None
    else:
        assert found is not None and found.startswith(problem) and "\n" not in found and ", got " in found


def test_the_sample_chat_renders_with_every_named_template() -> None:
    for name in ("plain", "chatml"):
        text = ChatTemplate(name).render(SAMPLE)
        assert all(content in text for _, content in SAMPLE)


def _lm(**data: object) -> dict[str, object]:
    return {
        "name": "lm",
        "task": "language_modeling",
        "data": {
            "train": "corpus",
            "tokenizer": {"train": "bpe", "vocab_size": 300},
            "block_size": 8,
            **data,
        },
        "model": {"layers": [{"token_embedding": {"dim": 8}}, {"lm_head": {}}]},
    }


def test_the_spec_field_takes_a_name_or_jinja_and_refuses_the_rest() -> None:
    assert parse_spec(_lm()).data.chat_template is None
    assert parse_spec(_lm(chat_template="chatml")).data.chat_template == "chatml"
    jinja = "{% for m in messages %}{{ m.content }}{% endfor %}"
    assert parse_spec(_lm(chat_template=jinja)).data.chat_template == jinja
    with pytest.raises(SpecError) as err:
        parse_spec(_lm(chat_template="{{ messages"))
    assert str(err.value).startswith("spec: data.chat_template: not a valid Jinja2 template")
    assert "\n" not in str(err.value)
    with pytest.raises(SpecError, match=r"data\.chat_template: must be plain, chatml or a Jinja2"):
        parse_spec(_lm(), ["data.chat_template=chatm"])
    classifier = {
        "name": "c",
        "data": {"train": "builtin:digits28", "chat_template": "chatml"},
        "model": {"layers": [{"dense": {"units": 10}}]},
    }
    with pytest.raises(
        SpecError, match=r"data\.chat_template applies to language_modeling, not classification"
    ):
        parse_spec(classifier)
