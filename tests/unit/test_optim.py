"""The optimizer's parameter groups and the learning-rate schedule."""

from __future__ import annotations

import math

import pytest
import torch

from skylift.spec import OptimizerSpec, ScheduleSpec
from skylift.train.optim import lr_factor, make_optimizer


def test_warmup_then_cosine_or_linear_decay_to_the_floor() -> None:
    s = ScheduleSpec(warmup_steps=4, decay="cosine", min_lr_ratio=0.1)
    total = 24
    assert [lr_factor(i, total, s) for i in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, total, s) == pytest.approx(1.0)
    assert lr_factor(total - 1, total, s) == pytest.approx(0.1)
    middle = 4 + (total - 4 - 1) / 2
    assert lr_factor(int(middle), total, s) == pytest.approx(
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 9 / 19))
    )
    linear = ScheduleSpec(decay="linear")
    assert [lr_factor(i, 5, linear) for i in range(5)] == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])
    assert lr_factor(7, 5, linear) == 0.0  # past the end: the floor, never negative
    assert all(lr_factor(i, 10, ScheduleSpec()) == 1.0 for i in range(10))


def test_adamw_decays_weight_matrices_only() -> None:
    model = torch.nn.Sequential(
        torch.nn.Embedding(10, 4), torch.nn.Linear(4, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2)
    )
    opt = make_optimizer(model, OptimizerSpec(name="adamw", lr=0.01, weight_decay=0.1))
    decay, keep = opt.param_groups
    assert decay["weight_decay"] == 0.1 and keep["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model[1].weight), id(model[3].weight)}
    assert len(keep["params"]) == 5  # the embedding, two biases, the norm's weight and bias
    adam = make_optimizer(model, OptimizerSpec(name="adam", weight_decay=0.1))
    assert len(adam.param_groups) == 1  # plain Adam's L2 penalty applies to everything, as asked
