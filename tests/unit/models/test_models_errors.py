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
        "batchnorm, conv1d, conv2d, decoder_block, dense, dropout, embedding, flatten, global_avgpool, gru, "
        "layernorm, lm_head, lstm, maxpool, norm, pool, position_embedding, reshape, residual, "
        "token_embedding, transformer_encoder)",
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
        ((784,), 0, "the data must have at least 1 class or target, got n_outputs=0"),
    ],
)
def test_bad_arguments(input_shape: tuple[int, ...], n_classes: int, expected: str) -> None:
    with pytest.raises(SpecError) as info:
        build_model(ModelSpec(layers=[DENSE10]), input_shape, n_classes)
    assert str(info.value) == expected


EMB = {"token_embedding": {"dim": 16}}
HEAD = {"lm_head": {}}
V = 40  # the tokenizer's vocabulary in the token cases

TOKEN_CASES: dict[str, tuple[list[Any], int | None, str]] = {
    "missing_vocab": (
        [EMB, {"pool": {}}, DENSE10],
        None,
        "model.layers[0] (token_embedding): needs the vocabulary size, which comes from the tokenizer "
        "(data.tokenizer), but the data gives none",
    ),
    "lm_head_missing_vocab": (
        [{"embedding": {"vocab_size": 40, "dim": 16}}, HEAD],
        None,
        "model.layers[1] (lm_head): needs the vocabulary size",
    ),
    "heads_not_dividing_dim": (
        [EMB, {"decoder_block": {"heads": 5}}, HEAD],
        V,
        "model.layers[1] (decoder_block).heads: 5 does not divide the input's last dim 16; "
        "use a divisor of 16",
    ),
    "repeat_zero": (
        [EMB, {"decoder_block": {"heads": 2, "repeat": 0}}, HEAD],
        V,
        "model.layers[1] (decoder_block).repeat: input should be greater than 0, got 0",
    ),
    "unknown_block_norm": (
        [EMB, {"decoder_block": {"heads": 2, "norm": "batch"}}, HEAD],
        V,
        "model.layers[1] (decoder_block).norm: input should be 'layer' or 'rms', got 'batch'",
    ),
    "unknown_norm_kind": (
        [EMB, {"norm": {"kind": "group"}}, HEAD],
        V,
        "model.layers[1] (norm).kind: input should be 'layer' or 'rms', got 'group'",
    ),
    "unknown_mlp": (
        [EMB, {"decoder_block": {"heads": 2, "mlp": "relu"}}, HEAD],
        V,
        "model.layers[1] (decoder_block).mlp: input should be 'gelu' or 'swiglu', got 'relu'",
    ),
    "rope_odd_head_dim": (
        [{"token_embedding": {"dim": 12}}, {"decoder_block": {"heads": 4}}, HEAD],
        V,
        "model.layers[1] (decoder_block).positions: rope rotates pairs of dims, so the head dim 12 / 4 = 3 "
        "must be even",
    ),
    "max_positions_without_learned": (
        [EMB, {"decoder_block": {"heads": 2, "max_positions": 64}}, HEAD],
        V,
        "model.layers[1] (decoder_block).max_positions: only applies with positions: learned",
    ),
    "block_on_flat_input": (
        [{"decoder_block": {"heads": 2}}],
        V,
        "model.layers[0] (decoder_block): needs input [length, dim] (e.g. after token_embedding), got [8]",
    ),
    "token_embedding_not_first": (
        [{"dense": {"units": 8}}, EMB, HEAD],
        V,
        "model.layers[1] (token_embedding): must be the first layer: it reads the token ids",
    ),
    "tie_without_token_embedding": (
        [{"embedding": {"vocab_size": 40, "dim": 16}}, HEAD],
        V,
        "model.layers[1] (lm_head).tie_embedding: needs a token_embedding as the first layer to share its "
        "weight; or set tie_embedding: false",
    ),
    "tie_with_other_dim": (
        [EMB, {"dense": {"units": 8}}, HEAD],
        V,
        "model.layers[2] (lm_head).tie_embedding: the input's last dim 8 differs from the token embedding's "
        "dim 16",
    ),
    "bad_pool_mode": (
        [EMB, {"pool": {"mode": "max"}}, DENSE10],
        V,
        "model.layers[1] (pool).mode: input should be 'mean', 'first' or 'last', got 'max'",
    ),
    "language_model_without_head": (
        [EMB, {"decoder_block": {"heads": 2}}],
        V,
        "model output has shape [8, 16] but a language model over 8 tokens with a vocabulary of 40 must "
        "output [8, 40] (end with lm_head: {})",
    ),
}


@pytest.mark.parametrize("name", list(TOKEN_CASES))
def test_bad_token_layers_give_one_line(name: str) -> None:
    layers, vocab_size, expected = TOKEN_CASES[name]
    n_outputs = V if HEAD in layers or name == "language_model_without_head" else 10
    with pytest.raises(SpecError) as info:
        build_model(ModelSpec(layers=layers), (8,), n_outputs, vocab_size=vocab_size)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(expected), message


def test_classifier_ending_in_lm_head_is_rejected() -> None:
    with pytest.raises(SpecError) as info:
        build_model(ModelSpec(layers=[EMB, HEAD]), (8,), 3, vocab_size=V)
    assert str(info.value) == (
        "model output has shape [8, 40] but the data has 3 classes (flatten or pool to one dim, then end "
        "with dense: {units: 3})"
    )


def test_vocab_size_too_small() -> None:
    with pytest.raises(SpecError) as info:
        build_model(ModelSpec(layers=[EMB, HEAD]), (8,), 1, vocab_size=1)
    assert str(info.value) == "the tokenizer's vocab_size must be >= 2 (id 0 is padding), got 1"
