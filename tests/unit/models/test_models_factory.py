"""Factory models: `package.module:function` from the user's own code, checked like declarative ones."""

from __future__ import annotations

import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from skylift.errors import SpecError
from skylift.models import build_model, describe_model
from skylift.spec import ModelSpec

FACTORY_SOURCE = """
import torch
from torch import nn

IMPORTED = True

class Net(nn.Module):
    def __init__(self, hidden, classes):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(16, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        return self.head(self.body(x))

def build(hidden=8, classes=3):
    return Net(hidden, classes)

def not_a_module():
    return 42

def broken(**kwargs):
    raise ValueError("hidden must be even\\nsecond line")

def tuple_out():
    class T(nn.Module):
        def forward(self, x):
            return x, x
    return T()

def crashes_on_input():
    return nn.Linear(5, 3)

def tiny_lm(vocab, dim=4):
    # nn.Embedding refuses float input: the dummy batch must be int64 token ids
    return nn.Sequential(nn.Embedding(vocab, dim), nn.Linear(dim, vocab))

NOT_CALLABLE = 3
"""


@pytest.fixture
def factory_pkg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A package `skyfac_<n>` with module `nets`, importable for this test only."""
    name = f"skyfac_{uuid.uuid4().hex[:8]}"
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(textwrap.dedent(FACTORY_SOURCE))
    (pkg / "bad_import.py").write_text("import skylift_no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[mod]


def _build(ref: str, n_classes: int = 3, **kwargs: object) -> nn.Module:
    return build_model(ModelSpec(factory=ref, kwargs=kwargs), (4, 4), n_classes)


def test_factory_success(factory_pkg: str) -> None:
    model = _build(f"{factory_pkg}.nets:build", n_classes=5, hidden=6, classes=5)
    assert type(model).__name__ == "Net"
    assert model.training
    assert model(torch.randn(2, 4, 4)).shape == (2, 5)
    assert describe_model(model, (4, 4)) == [("body", "[6]", 16 * 6 + 6), ("head", "[5]", 6 * 5 + 5)]


def test_factory_init_is_left_alone(factory_pkg: str) -> None:
    model = _build(f"{factory_pkg}.nets:build")
    assert torch.count_nonzero(model.head.bias) > 0  # torch's default, not Glorot's zero bias


def test_factory_keeps_submodule_modes(factory_pkg: str) -> None:
    model = _build(f"{factory_pkg}.nets:build")
    assert all(m.training for m in model.modules())


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        (
            "skylift_no_such_pkg.nets:build",
            "model.factory 'skylift_no_such_pkg.nets:build': cannot import module 'skylift_no_such_pkg.nets' "
            "(ModuleNotFoundError: No module named 'skylift_no_such_pkg')",
        ),
        (
            "{pkg}.bad_import:build",
            "model.factory '{pkg}.bad_import:build': cannot import module '{pkg}.bad_import' "
            "(ModuleNotFoundError: No module named 'skylift_no_such_dependency')",
        ),
        (
            "{pkg}.nets:missing",
            "model.factory '{pkg}.nets:missing': module '{pkg}.nets' has no attribute 'missing'",
        ),
        (
            "{pkg}.nets:NOT_CALLABLE",
            "model.factory '{pkg}.nets:NOT_CALLABLE': 'NOT_CALLABLE' is not callable (it is a int value)",
        ),
        (
            "{pkg}.nets:not_a_module",
            "model.factory '{pkg}.nets:not_a_module': returned a int value, expected a torch.nn.Module",
        ),
        (
            "{pkg}.nets:broken",
            "model.factory '{pkg}.nets:broken': calling it with model.kwargs raised "
            "ValueError: hidden must be even",
        ),
        (
            "{pkg}.nets:crashes_on_input",
            "model.factory '{pkg}.nets:crashes_on_input': the model fails on a dummy batch of input [4, 4]: "
            "RuntimeError: mat1 and mat2 shapes cannot be multiplied",
        ),
        (
            "{pkg}.nets:tuple_out",
            "model output is a tuple, expected one logits tensor of shape [batch, 3]",
        ),
        (
            "{pkg}.nets:build-it",
            "model.factory '{pkg}.nets:build-it': must look like 'package.module:function'",
        ),
    ],
)
def test_factory_errors_are_one_line(factory_pkg: str, ref: str, expected: str) -> None:
    with pytest.raises(SpecError) as info:
        _build(ref.format(pkg=factory_pkg))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(expected.format(pkg=factory_pkg)), message


def test_factory_wrong_output_shape(factory_pkg: str) -> None:
    with pytest.raises(SpecError) as info:
        _build(f"{factory_pkg}.nets:build", n_classes=10, classes=4)
    assert str(info.value) == (
        "model output has shape [4] but the data has 10 classes (last layer should be dense: {units: 10})"
    )


def test_factory_wrong_kwargs(factory_pkg: str) -> None:
    with pytest.raises(SpecError) as info:
        _build(f"{factory_pkg}.nets:build", depth=3)
    assert str(info.value).startswith(
        f"model.factory '{factory_pkg}.nets:build': calling it with model.kwargs raised TypeError: "
    )


def test_factory_language_model_gets_token_ids(factory_pkg: str) -> None:
    spec = ModelSpec(factory=f"{factory_pkg}.nets:tiny_lm", kwargs={"vocab": 9})
    model = build_model(spec, (6,), 9, vocab_size=9)
    assert model(torch.randint(0, 9, (2, 6))).shape == (2, 6, 9)
    with pytest.raises(SpecError) as info:
        build_model(
            ModelSpec(factory=f"{factory_pkg}.nets:tiny_lm", kwargs={"vocab": 8}), (6,), 9, vocab_size=9
        )
    assert str(info.value) == (
        "model output has shape [6, 8] but a language model over 6 tokens with a vocabulary of 9 must output "
        "[6, 9] (end with lm_head: {})"
    )
