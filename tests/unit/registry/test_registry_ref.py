"""Model references: NAME, NAME:VERSION, NAME@ALIAS parse strictly and print back unchanged."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from skylift.errors import SpecError
from skylift.registry import ModelRef, parse_ref

NAMES = st.from_regex(r"\A[a-z0-9][a-z0-9._-]{0,62}\Z").filter(lambda s: ".." not in s)
ALIASES = st.from_regex(r"\A[a-z][a-z0-9_-]{0,31}\Z")
VERSIONS = st.integers(min_value=1, max_value=10**12)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mnist-mlp", ModelRef("mnist-mlp")),
        ("mnist-mlp:3", ModelRef("mnist-mlp", version=3)),
        ("mnist-mlp@production", ModelRef("mnist-mlp", alias="production")),
        ("a.b_c-9:12", ModelRef("a.b_c-9", version=12)),
        ("0", ModelRef("0")),
    ],
)
def test_valid_refs_parse(text: str, expected: ModelRef) -> None:
    assert parse_ref(text) == expected
    assert str(expected) == text


@pytest.mark.parametrize(
    ("text", "part"),
    [
        ("a:b:c", "malformed"),
        ("a@b@c", "malformed"),
        ("a:1@prod", "malformed"),
        ("name@", "empty alias"),
        ("name:", "positive integer"),
        ("x:0", "positive integer"),
        ("x:-1", "positive integer"),
        ("x:01", "positive integer"),
        ("x:1.5", "positive integer"),
        ("x: 1", "positive integer"),
        ("../x", "not allowed"),
        ("a/b", "not allowed"),
        ("a\\b", "not allowed"),
        ("a..b", "not allowed"),
        (".hidden", "not allowed"),
        ("UPPER", "not allowed"),
        ("", "no model name"),
        (":3", "no model name"),
        ("@prod", "no model name"),
        ("x@Prod", "alias 'Prod' is not allowed"),
        ("x@1st", "not allowed"),
        ("a" * 64, "not allowed"),
    ],
)
def test_malformed_refs_are_one_line_spec_errors(text: str, part: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_ref(text)
    message = str(err.value)
    assert part in message
    assert "\n" not in message


def test_ref_fields_are_validated_when_built_directly() -> None:
    with pytest.raises(SpecError):
        ModelRef("ok", version=1, alias="prod")
    with pytest.raises(SpecError):
        ModelRef("ok", version=0)
    with pytest.raises(SpecError):
        ModelRef("../etc")


@given(NAMES, st.one_of(st.none(), VERSIONS), ALIASES, st.booleans())
def test_round_trip(name: str, version: int | None, alias: str, use_alias: bool) -> None:
    ref = ModelRef(name, alias=alias) if use_alias and version is None else ModelRef(name, version=version)
    assert parse_ref(str(ref)) == ref


@given(st.text(max_size=80))
def test_garbage_is_rejected_or_round_trips(text: str) -> None:
    try:
        ref = parse_ref(text)
    except SpecError as exc:
        assert "\n" not in str(exc)
        return
    assert str(ref) == text
    assert "/" not in ref.name and ".." not in ref.name
