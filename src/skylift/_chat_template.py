"""Chat templates: how a language model's chat messages become one prompt.

A template is a name (`plain`, `chatml`) or a Jinja2 template in Hugging Face's convention: it
renders `messages` (a list of `{role, content}`), `add_generation_prompt` (true: end where the
assistant's answer starts), `bos_token`, `eos_token` and `raise_exception(message)`. It is recorded
with the model (model.json `data.chat_template`) and may come from a file someone else wrote, so it
renders in Jinja2's immutable sandbox: no attribute access to Python internals, no mutation of
what it is given, ranges capped. The rendered text is tokenized as text.

Models trained without a template get `plain`: `role: content` lines, then `assistant:`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from skylift.errors import SpecError

PLAIN = (
    "{% for message in messages %}{{ message['role'] + ': ' + message['content'] + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'assistant:' }}{% endif %}"
)
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
NAMED = {"plain": PLAIN, "chatml": CHATML}
MAX_CHARS = 65_536  # a template is a page of Jinja2 (Hugging Face's longest are ~10 KB)
# A conversation every chat template must render: templates that refuse a system message exist.
SAMPLE = (("user", "Hello there."), ("assistant", "Hi! How can I help?"), ("user", "Name three colours."))

Messages = Sequence[tuple[str, str]]
_FAILED = "the model's chat template failed on these messages"


class ChatTemplateError(SpecError):
    """A template that does not compile, or that failed (or refused) to render these messages."""


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    line = getattr(exc, "lineno", None)
    first = text.splitlines()[0][:200]
    return f"{first} (line {line})" if line else first


def _raise(message: str) -> None:
    """`raise_exception(...)` of Hugging Face templates: a template refusing a conversation."""
    from jinja2 import TemplateError

    raise TemplateError(message)


class ChatTemplate:
    """A compiled template; `render(messages)` is the prompt (ChatTemplateError if it fails)."""

    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "") -> None:
        """`source`: a name of NAMED or a Jinja2 template; SpecError when it does not compile."""
        self.name = source if source in NAMED else "jinja"
        self._tokens = {"bos_token": bos_token, "eos_token": eos_token}
        self._render = self._compile(NAMED.get(source, source))

    @classmethod
    def recorded(cls, found: Any, *, bos_token: str = "", eos_token: str = "") -> ChatTemplate:
        """The template model.json records (a name, Jinja2, or the older `{"message", "assistant"}`
        format strings); `plain` when it records none."""
        if isinstance(found, dict):
            return _FormatTemplate(found)
        source = found if isinstance(found, str) and found else "plain"
        return cls(source, bos_token=bos_token, eos_token=eos_token)

    def _compile(self, source: str) -> Callable[[list[dict[str, str]]], str]:
        from jinja2 import TemplateError
        from jinja2.ext import loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        if len(source) > MAX_CHARS:
            raise ChatTemplateError(f"the chat template has {len(source):,} characters, over {MAX_CHARS:,}")
        # As Hugging Face renders them: block tags take their newline, {% break %} and {% continue %}.
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
        env.globals["raise_exception"] = _raise
        try:
            template = env.from_string(source)
        except TemplateError as exc:
            raise ChatTemplateError(f"not a valid Jinja2 template: {_one_line(exc)}") from None

        def render(messages: list[dict[str, str]]) -> str:
            return template.render(messages=messages, add_generation_prompt=True, **self._tokens)

        return render

    def render(self, messages: Messages) -> str:
        """The prompt of (role, content) messages, ending where the assistant's answer starts."""
        try:
            text = self._render([{"role": r, "content": c} for r, c in messages])
        except ChatTemplateError:
            raise
        except Exception as exc:  # any error inside the template: a TemplateError, a TypeError, ...
            raise ChatTemplateError(f"{_FAILED}: {_one_line(exc)}") from None
        if not isinstance(text, str):  # pragma: no cover - Jinja2 always renders a str
            raise ChatTemplateError("the model's chat template did not render text")
        return text


class _FormatTemplate(ChatTemplate):
    """model.json's older chat template: Python format strings `message` ({role}, {content}) and
    `assistant`, each left out meaning the plain one's."""

    def __init__(self, recorded: dict[str, Any]) -> None:
        self.name = "format"
        message = str(recorded.get("message", "{role}: {content}\n"))
        assistant = str(recorded.get("assistant", "assistant:"))

        def render(messages: list[dict[str, str]]) -> str:
            try:
                return "".join(message.format(**m) for m in messages) + assistant
            except (KeyError, IndexError, ValueError) as exc:
                raise ChatTemplateError(f"the model's chat template is a bad format string: {exc}") from None

        self._render = render


def template_problem(value: str) -> str | None:
    """Why `value` is not a usable chat template (one line ending in ', got ...'), else None.

    A name of NAMED, or a Jinja2 template (it holds `{{` or `{%`) that compiles and renders a sample
    conversation into text containing the messages' content."""
    shown = repr(value[:40]) + ("..." if len(value) > 40 else "")
    if value in NAMED:
        return None
    if "{{" not in value and "{%" not in value:
        jinja = "a Jinja2 template of messages ({{ }} / {% %})"
        return f"must be {', '.join(NAMED)} or {jinja}, got {shown}"
    try:
        text = ChatTemplate(value).render(SAMPLE)
    except ChatTemplateError as exc:
        what = str(exc).replace(_FAILED, "it fails on a sample chat")
        return f"{what}, got {shown}"
    if not all(content in text for _, content in SAMPLE):
        return f"its rendering leaves out the messages' content (render message['content']), got {shown}"
    return None
