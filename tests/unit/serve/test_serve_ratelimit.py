"""--rate-limit values: a plain number or the issue's own `100/s` syntax."""

from __future__ import annotations

import pytest

from skylift.errors import SpecError
from skylift.serve.ratelimit import parse_rate


@pytest.mark.parametrize(
    ("text", "per_s"),
    [("100", 100.0), ("100/s", 100.0), ("2.5/s", 2.5), ("6000/m", 100.0), ("360000/h", 100.0), ("0", 0.0)],
)
def test_rates(text: str, per_s: float) -> None:
    assert parse_rate(text) == per_s


@pytest.mark.parametrize("text", ["", "-1", "fast", "100/d", "1e3", "100/"])
def test_bad_rates_name_the_form(text: str) -> None:
    with pytest.raises(SpecError, match="--rate-limit must look like 100/s"):
        parse_rate(text)
