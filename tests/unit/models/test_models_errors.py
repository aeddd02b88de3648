"""A bad declarative model gets one SpecError line naming the layer, the parameter and the fix."""

from __future__ import annotations

from typing import Any

import pytest

from skylift.errors import SpecError
from skylift.models import build_model
from skylift.spec import ModelSpec

DENSE10 = {"dense": {"units": 10}}

CASES: dict[str, tuple[list[Any], tuple[int, ...], str]] = {
    "unknown_layer_type": (
        [{"dens": {"units": 10}}],
        (784,),
        "model.layers[0]: unknown layer type 'dens' (did you mean 'dense'? known: activation, avgpool, "
        "batchnorm, conv1d, conv2d, dense, dropout, embedding, flatten, global_avgpool, gru, layernorm, "
        "lstm, maxpool, position_embedding, reshape, transformer_encoder)",
    ),
    "unknown_param": (
        [{"dense": {"unit": 10}}],
        (784,),
        "model.layers[0] (dense).unit: unknown parameter (allowed: units, activation, bias) (and 1 more)",
    ),
    "param_on_paramless_layer": (
        [{"flatten": {"start": 1}}, DENSE10],
        (784,),
        "model.layers[0] (flatten).start: unknown parameter (takes no parameters)",
    ),
    "missing_param": (
        [{"dense": None}],
        (784,),
        "model.layers[0] (dense).units: required parameter is missing",
    ),
    "wrong_param_type": (
        [{"dropout": {"rate": "half"}}, DENSE10],
        (784,),
        "model.layers[0] (dropout).rate: input should be a valid number, unable to parse string as a number, "
        "got 'half'",
    ),
    "units_zero": (
        [{"dense": {"units": 0}}],
        (784,),
        "model.layers[0] (dense).units: input should be greater than 0, got 0",
    ),
    "bad_activation": (
        [{"dense": {"units": 10, "activation": "rleu"}}],
        (784,),
        "model.layers[0] (dense).activation: input should be 'relu', 'gelu', 'tanh', 'sigmoid', 'silu', "
        "'elu', 'leaky_relu', 'softmax' or 'log_softmax', got 'rleu'",
    ),
    "params_not_mapping": (
        [{"dense": 10}],
        (784,),
        "model.layers[0] (dense): parameters must be a mapping like {name: value} or {}, got 10",
    ),
    "conv2d_on_flat_input": (
        [{"dense": {"units": 32}}, {"conv2d": {"filters": 4, "kernel_size": 3}}, DENSE10],
        (784,),
        "model.layers[1] (conv2d): needs input [channels, height, width], got [32]",
    ),
    "kernel_larger_than_input": (
        [{"conv1d": {"filters": 4, "kernel_size": 9}}, {"flatten": {}}, DENSE10],
        (2, 5),
        "model.layers[0] (conv1d): cannot run on input [2, 5]: RuntimeError: Calculated padded input size",
    ),
    "kernel_size_dims": (
        [{"conv1d": {"filters": 4, "kernel_size": [3, 3]}}],
        (2, 5),
        "model.layers[0] (conv1d).kernel_size: needs 1 size for this input, got 2",
    ),
    "bad_padding": (
        [{"conv1d": {"filters": 4, "kernel_size": 3, "padding": "full"}}],
        (2, 5),
        "model.layers[0] (conv1d).padding: must be 'same', 'valid' or an int >= 0, got 'full'",
    ),
    "reshape_count": (
        [{"reshape": {"shape": [27, 28]}}, {"flatten": {}}, DENSE10],
        (784,),
        "model.layers[0] (reshape).shape: cannot reshape [784] (784 values) to [27, 28] (756 values)",
    ),
    "reshape_unknown_not_divisible": (
        [{"reshape": {"shape": [5, -1]}}],
        (784,),
        "model.layers[0] (reshape).shape: cannot reshape [784] (784 values) to [5, -1]: "
        "784 is not a multiple of 5",
    ),
    "reshape_two_unknowns": (
        [{"reshape": {"shape": [-1, -1]}}],
        (784,),
        "model.layers[0] (reshape).shape: must hold positive sizes and at most one -1, got [-1, -1]",
    ),
    "transformer_heads": (
        [{"embedding": {"vocab_size": 50, "dim": 12}}, {"transformer_encoder": {"heads": 5, "ff_dim": 8}}],
        (20,),
        "model.layers[1] (transformer_encoder).heads: 5 does not divide the input's last dim 12 (d_model); "
        "use a divisor of 12",
    ),
    "lstm_on_flat_input": (
        [{"lstm": {"units": 8}}],
        (20,),
        "model.layers[0] (lstm): needs input [length, features], got [20]",
    ),
    "lstm_dropout_single_layer": (
        [{"lstm": {"units": 8, "dropout": 0.2}}],
        (20, 3),
        "model.layers[0] (lstm).dropout: applies between stacked layers, so it needs num_layers > 1, got 0.2",
    ),
    "final_units_not_classes": (
        [{"dense": {"units": 12}}],
        (784,),
        "model output has shape [12] but the data has 10 classes (last layer should be dense: {units: 10})",
    ),
    "final_output_not_flat": (
        [{"reshape": {"shape": [28, 28]}}, DENSE10],
        (784,),
        "model output has shape [28, 10] but the data has 10 classes "
        "(flatten or pool to one dim, then end with dense: {units: 10})",
    ),
    "two_key_entry": (
        [{"dense": {"units": 10}, "dropout": {"rate": 0.1}}],
        (784,),
        "model.layers[0]: each layer must be a one-key mapping like `- dense: {units: 10}`, got 2 keys "
        "(dense, dropout); start each layer with its own '-'",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_layers_give_one_line(name: str) -> None:
    layers, input_shape, expected = CASES[name]
    with pytest.raises(SpecError) as info:
        build_model(ModelSpec(layers=layers), input_shape, 10)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(expected), message


def test_non_mapping_layer_entry() -> None:
    # ModelSpec's own validation rejects this too; build_model must not rely on it
    spec = ModelSpec.model_construct(layers=[{"flatten": {}}, "dense"], factory=None, kwargs={})
    with pytest.raises(SpecError) as info:
        build_model(spec, (784,), 10)
    assert str(info.value) == (
        "model.layers[1]: each layer must be a one-key mapping like `- dense: {units: 10}`, got 'dense'"
    )


@pytest.mark.parametrize(
    ("input_shape", "n_classes", "expected"),
    [
        ((), 10, "model.input_shape must be a non-empty list of positive sizes, got []"),
        ((0, 3), 10, "model.input_shape must be a non-empty list of positive sizes, got [0, 3]"),
        ((784,), 0, "the data must have at least 1 class, got n_classes=0"),
    ],
)
def test_bad_arguments(input_shape: tuple[int, ...], n_classes: int, expected: str) -> None:
    with pytest.raises(SpecError) as info:
        build_model(ModelSpec(layers=[DENSE10]), input_shape, n_classes)
    assert str(info.value) == expected
