"""Job spec: defaults, overrides, and one clear line for every kind of bad spec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from skylift.errors import SpecError
from skylift.spec import JobSpec, load_spec, parse_spec, spec_hash

EXAMPLE = Path(__file__).parents[2] / "examples" / "mnist_mlp.yaml"


def _raw() -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    return raw


def test_example_spec_is_the_design_mlp() -> None:
    spec = load_spec(EXAMPLE)
    assert spec.name == "mnist-mlp"
    assert spec.model.input_shape == [784]
    assert [next(iter(layer)) for layer in spec.model.layers or []] == [
        "dense",
        "dropout",
        "batchnorm",
        "dense",
        "dropout",
        "batchnorm",
        "dense",
    ]
    assert (spec.train.epochs, spec.train.batch_size, spec.train.optimizer.lr) == (10, 64, 0.001)
    assert spec.train.checkpoint.monitor == "val_loss" and spec.train.checkpoint.mode == "min"


def test_minimal_spec_gets_documented_defaults() -> None:
    spec = parse_spec(
        {"name": "m", "data": {"train": "builtin:digits"}, "model": {"layers": [{"dense": {"units": 10}}]}}
    )
    assert spec.train.optimizer.eps == 1e-7  # Keras' Adam epsilon
    assert spec.model.init == "glorot_uniform"
    assert spec.distributed.workers == "auto" and spec.distributed.max_restarts == 3
    assert spec.data.validation_split == 0.1


def test_overrides_apply_dotted_paths_with_yaml_values() -> None:
    spec = load_spec(EXAMPLE, ["train.epochs=3", "train.optimizer.lr=0.01", "model.input_shape=[1, 28, 28]"])
    assert (
        spec.train.epochs == 3 and spec.train.optimizer.lr == 0.01 and spec.model.input_shape == [1, 28, 28]
    )
    assert load_spec(EXAMPLE).train.epochs == 10


def test_resolved_spec_round_trips_and_hashes_stably() -> None:
    spec = load_spec(EXAMPLE)
    again = parse_spec(yaml.safe_load(spec.to_yaml()))
    assert again == spec and spec_hash(again) == spec_hash(spec)
    assert spec_hash(load_spec(EXAMPLE, ["train.seed=1"])) != spec_hash(spec)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.batch_size=0", "train.batch_size: input should be greater than or equal to 1, got 0"),
        ("train.batch_size=-64", "train.batch_size: input should be greater than or equal to 1, got -64"),
        ("train.epochs=ten", "train.epochs: input should be a valid integer"),
        ("train.epocs=3", "train.epocs: unknown field"),
        ("train.optimizer.name=adagrad", "train.optimizer.name: input should be 'adam', 'adamw' or 'sgd'"),
        ("train.optimizer.lr=0", "train.optimizer.lr: input should be greater than 0"),
        ("data.validation_split=1.5", "data.validation_split: input should be less than 1"),
        ("distributed.workers=0", "distributed.workers: must be a number of processes >= 1 or 'auto', got 0"),
        ("model.input_shape=[0]", "model.input_shape: must be a non-empty list of positive sizes"),
        ("model.factory=pkg:fn", "give exactly one of model.layers or model.factory"),
        ("model.layers=[]", "model.layers must hold at least one layer"),
        ("name=Bad Name", "name: must be 1-63 lowercase letters"),
        ("train.checkpoint.mode=lowest", "train.checkpoint.mode: input should be 'min' or 'max'"),
        ("data=3", "data: input should be a valid dictionary"),
        ("train.epochs.x=1", "--set train.epochs.x: train.epochs is not a section"),
        ("noequals", "--set expects FIELD=VALUE"),
        ("train.batch_size=true", "train.batch_size: true/false is not valid here, got True"),
        ("train.optimizer.lr=false", "train.optimizer.lr: true/false is not valid here, got False"),
        ("model.input_shape=true", "model.input_shape: true/false is not valid here"),
    ],
)
def test_bad_fields_get_one_line_naming_field_and_value(override: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(EXAMPLE, [override])
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_set_indexes_list_items_as_tune_space_does() -> None:
    spec = load_spec(EXAMPLE, ["model.layers.0.dense.units=32", "model.layers.1={dropout: {rate: 0.3}}"])
    assert spec.model.layers is not None
    assert spec.model.layers[0]["dense"]["units"] == 32 and spec.model.layers[1] == {"dropout": {"rate": 0.3}}
    assert spec.model.layers[2:] == load_spec(EXAMPLE).model.layers[2:]  # the rest untouched
    n = len(spec.model.layers)
    for override, message in (
        (
            f"model.layers.{n}.dense.units=3",
            f"model.layers is a list of {n}: give an index 0..{n - 1}, got '{n}'",
        ),
        ("model.layers.first.dense.units=3", "model.layers is a list of"),
        (
            "model.layers.0.dense.units.x=1",
            "--set model.layers.0.dense.units.x: model.layers.0.dense.units is not a section",
        ),
    ):
        with pytest.raises(SpecError) as info:
            load_spec(EXAMPLE, [override])
        assert message in str(info.value) and "\n" not in str(info.value)


def test_missing_required_field() -> None:
    raw = _raw()
    del raw["data"]
    with pytest.raises(SpecError, match="data: required field is missing"):
        parse_spec(raw)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"name: [unclosed\n", "invalid YAML at line"),
        (b"- just\n- a list\n", "a job spec must be a YAML mapping, got list"),
        (b"", "a job spec must be a YAML mapping, got NoneType"),
        (b"\xff\xfe\x00garbage", "not UTF-8 text"),
        (b"a: !!python/object/apply:os.system ['true']\n", "invalid YAML"),
    ],
)
def test_bad_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "spec.yaml"
    path.write_bytes(content)
    with pytest.raises(SpecError, match=message):
        load_spec(path)


def test_missing_folder_and_oversized_files(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(tmp_path / "nope.yaml")
    with pytest.raises(SpecError, match="is a folder"):
        load_spec(tmp_path)
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (2 << 20))
    with pytest.raises(SpecError, match="larger than 1024 KiB"):
        load_spec(big)


def test_spec_is_frozen() -> None:
    spec = load_spec(EXAMPLE)
    with pytest.raises(Exception, match="frozen"):
        spec.name = "other"  # type: ignore[misc]


_yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(
    section=st.sampled_from(["data", "model", "train", "distributed", "tune", "serve", "name"]),
    value=_yaml_values,
)
def test_any_junk_in_any_section_is_a_spec_error_or_valid(section: str, value: Any) -> None:
    raw = _raw()
    raw[section] = value
    try:
        assert isinstance(parse_spec(raw), JobSpec)
    except SpecError as exc:
        assert "\n" not in str(exc)


def test_quickstart_trains_the_example_spec() -> None:
    """The packaged quickstart spec is the README's example, byte for byte (no drift between them)."""
    packaged = Path(__file__).parents[2] / "src" / "skylift" / "cli" / "quickstart.yaml"
    assert packaged.read_bytes() == EXAMPLE.read_bytes()


def test_every_error_is_listed_not_just_counted() -> None:
    with pytest.raises(SpecError) as info:
        load_spec(EXAMPLE, ["train.epochs=0", "train.batch_size=0"])
    message = str(info.value)
    assert "train.epochs: input should be greater than or equal to 1, got 0" in message
    assert "train.batch_size: input should be greater than or equal to 1, got 0" in message
    assert "more)" not in message and "\n" not in message


def test_a_flood_of_errors_lists_ten_and_counts_the_rest() -> None:
    raw = _raw()
    raw["train"].update({f"typo{i}": 1 for i in range(12)})
    with pytest.raises(SpecError) as info:
        parse_spec(raw)
    message = str(info.value)
    assert message.count("unknown field") == 10 and message.endswith("(and 2 more)")


@pytest.mark.parametrize(
    ("checkpoint", "mode"),
    [
        ({"monitor": "val_accuracy"}, "max"),
        ({"monitor": "val_f1", "mode": None}, "max"),
        ({"monitor": "val_loss"}, "min"),
        ({}, "min"),
        ({"monitor": "val_recall", "mode": "max"}, "max"),
    ],
)
def test_checkpoint_mode_left_out_follows_the_monitor(checkpoint: dict[str, Any], mode: str) -> None:
    raw = _raw()
    raw["train"]["checkpoint"] = checkpoint
    assert parse_spec(raw).train.checkpoint.mode == mode


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "train.checkpoint={monitor: val_accuracy, mode: min}",
            "train.checkpoint: mode min keeps the worst epoch of val_accuracy (higher is better); "
            "set mode: max or leave mode out",
        ),
        (
            "train.checkpoint={monitor: val_loss, mode: max}",
            "train.checkpoint: mode max keeps the worst epoch of val_loss (lower is better); "
            "set mode: min or leave mode out",
        ),
        (
            "tune.metric=val_loss",
            "tune: direction maximize picks the worst trials by val_loss (lower is better); "
            "set direction: minimize or leave direction out",
        ),
    ],
)
def test_a_mode_contradicting_its_metric_is_refused(override: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(EXAMPLE, [override])
    assert message in str(info.value)


def test_tune_direction_left_out_follows_the_metric() -> None:
    raw = _raw()
    raw["tune"] = {"metric": "val_loss"}
    assert parse_spec(raw).tune.direction == "minimize"
    raw["tune"] = {}
    assert parse_spec(raw).tune.direction == "maximize"


def test_the_serve_section_is_not_part_of_the_spec_hash() -> None:
    """Serving defaults do not change what is trained: editing them must not block a resume."""
    spec = load_spec(EXAMPLE)
    assert spec_hash(load_spec(EXAMPLE, ["serve.max_batch_rows=8", "serve.replicas=1"])) == spec_hash(spec)
    assert spec_hash(load_spec(EXAMPLE, ["train.epochs=3"])) != spec_hash(spec)


def _media(data: dict[str, Any], model: dict[str, Any] | None = None) -> JobSpec:
    raw = {
        "name": "media",
        "data": {"train": "folder", **data},
        "model": model or {"layers": [{"global_avgpool": {}}, {"dense": {"units": 2}}]},
    }
    return parse_spec(raw)


def test_media_sections_fill_in_their_defaults() -> None:
    image = _media({"image": {"size": 32}}).data.image
    assert image is not None and image.size == [32, 32] and image.channels is None and image.fit == "resize"
    assert not image.augment.active and image.mean == [0.0] and image.std == [1.0]
    audio = _media({"audio": {}}).data.audio
    assert audio is not None and (audio.sample_rate, audio.n_mels, audio.shape) == (16000, 40, (40, 101))
    spec = _media({"image": {"size": [24, 32], "augment": {"flip": True}}})
    assert spec.to_dict()["data"]["image"]["augment"]["flip"] is True
    assert spec_hash(spec) != spec_hash(_media({"image": {"size": [24, 32]}}))  # augmentation is trained


@pytest.mark.parametrize(
    "audio",
    [{}, {"sample_rate": 8000, "duration_s": 1.5, "n_fft": 256, "hop_length": 128, "n_mels": 32}],
)
def test_the_spec_computes_the_audio_shape_the_data_layer_yields(audio: dict[str, Any]) -> None:
    from skylift.data._audio import AudioPrep

    a = _media({"audio": audio}).data.audio
    assert a is not None
    assert a.shape == AudioPrep(a.sample_rate, a.duration_s, a.n_mels, a.n_fft, a.hop_length).shape


@pytest.mark.parametrize(
    ("data", "model", "message"),
    [
        (
            {"image": {"size": [32, 32, 3]}},
            None,
            "data.image.size: must be [height, width] with sizes in 1..4096",
        ),
        ({"image": {"size": 0}}, None, "data.image.size: must be [height, width]"),
        ({"image": {"size": 8, "channels": 2}}, None, "data.image.channels: input should be 1 or 3"),
        ({"image": {"size": 8, "mean": [0.1, 0.2]}}, None, "data.image.mean: needs 1 or 3 values"),
        ({"image": {"size": 8, "channels": 1, "std": [1, 1, 1]}}, None, "data.image.std: needs 1 value"),
        ({"image": {"size": 8, "std": [0.0]}}, None, "data.image.std: must hold values > 0"),
        (
            {"image": {"size": 8, "fit": "stretch"}},
            None,
            "data.image.fit: input should be 'resize' or 'crop'",
        ),
        (
            {"image": {"size": 8, "augment": {"flip": 3}}},
            None,
            "data.image.augment.flip: input should be a valid",
        ),
        (
            {"image": {"size": 8, "augment": {"rotate_degrees": 270}}},
            None,
            "rotate_degrees: input should be less",
        ),
        ({"image": {"size": 8, "augment": {"spin": True}}}, None, "data.image.augment.spin: unknown field"),
        ({"audio": {"n_mels": 300}}, None, "data.audio: n_mels 300 is more than the 201 frequency bins"),
        ({"audio": {"duration_s": 0.01}}, None, "is 160 samples, shorter than one n_fft window of 400"),
        (
            {"audio": {"augment": {"time_mask": 101}}},
            None,
            "augment.time_mask 101 would blank all 101 frames",
        ),
        (
            {"audio": {"sample_rate": 100}},
            None,
            "data.audio.sample_rate: input should be greater than or equal",
        ),
        ({"image": {"size": 8}, "audio": {}}, None, "data.image and data.audio exclude each other"),
        ({"path_column": "file"}, None, "data.path_column applies to tables of image or audio files"),
        (
            {"image": {"size": 8}, "text_column": "t", "tokenizer": {}},
            None,
            "data.image and data.text_column",
        ),
        (
            {"image": {"size": [8, 10], "channels": 3}},
            {"input_shape": [1, 8, 10], "layers": [{"dense": {"units": 2}}]},
            "model.input_shape [1, 8, 10] does not fit data.image (size [8, 10], channels 3), "
            "which gives [3, 8, 10]: leave model.input_shape out",
        ),
        (
            {"image": {"size": 8}},
            {"input_shape": [2, 8, 8], "layers": [{"dense": {"units": 2}}]},
            "which gives [1 or 3, 8, 8]",
        ),
        (
            {"audio": {}},
            {"input_shape": [40, 100], "layers": [{"dense": {"units": 2}}]},
            "model.input_shape [40, 100] does not fit data.audio, whose log-mel spectrogram is [40, 101]",
        ),
    ],
)
def test_bad_media_fields_get_one_line_naming_field_value_and_fix(
    data: dict[str, Any], model: dict[str, Any] | None, message: str
) -> None:
    with pytest.raises(SpecError) as info:
        _media(data, model)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_media_applies_to_classification_only() -> None:
    raw = {
        "name": "m",
        "task": "regression",
        "data": {"train": "f", "image": {"size": 8}},
        "model": {"layers": [{"dense": {"units": 1}}]},
    }
    with pytest.raises(SpecError, match=r"data\.image applies to classification, not regression"):
        parse_spec(raw)


def test_a_matching_input_shape_and_a_tune_space_over_media_fields_are_accepted() -> None:
    spec = _media(
        {"image": {"size": [8, 10], "channels": 1}},
        {"input_shape": [1, 8, 10], "layers": [{"dense": {"units": 2}}]},
    )
    assert spec.model.input_shape == [1, 8, 10]
    raw = spec.to_dict()
    raw["tune"] = {"space": {"data.image.augment.rotate_degrees": {"uniform": [0, 20]}}}
    assert parse_spec(raw).tune.space


def test_gradient_sync_defaults_are_fp32_in_one_bucket() -> None:
    d = load_spec(EXAMPLE).distributed
    assert (d.gradient_compression, d.bucket_mb) == ("none", "auto")
    d = load_spec(EXAMPLE, ["distributed.gradient_compression=fp16", "distributed.bucket_mb=2.5"]).distributed
    assert (d.gradient_compression, d.bucket_mb) == ("fp16", 2.5)
    bf16 = load_spec(EXAMPLE, ["distributed.gradient_compression=bf16"]).distributed
    assert bf16.gradient_compression == "bf16"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["distributed.gradient_compression=fp8"],
            "distributed.gradient_compression: input should be 'none', 'fp16' or 'bf16', got 'fp8'",
        ),
        (["distributed.bucket_mb=0"], "distributed.bucket_mb: must be MiB per gradient bucket in (0, 1024]"),
        (["distributed.bucket_mb=-1"], "distributed.bucket_mb: must be MiB per gradient bucket in (0, 1024]"),
        (["distributed.bucket_mb=4096"], "or 'auto', got 4096"),
        (["distributed.bucket_mb=big"], "or 'auto', got 'big'"),
        (["distributed.bucket_mb=true"], "distributed.bucket_mb: must be MiB per gradient bucket"),
        (
            ["distributed.strategy=fsdp", "distributed.gradient_compression=fp16"],
            "distributed: gradient_compression fp16 applies to DDP, not strategy fsdp (FSDP reduces each "
            "block's gradients itself): remove it, or use strategy ddp",
        ),
        (
            ["distributed.strategy=fsdp", "distributed.bucket_mb=1"],
            "distributed: bucket_mb 1.0 applies to DDP, not strategy fsdp",
        ),
    ],
)
def test_bad_gradient_sync_settings_get_one_line(overrides: list[str], message: str) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(EXAMPLE, overrides)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_gradient_sync_settings_are_accepted_with_strategy_auto() -> None:
    # auto picks fsdp only for a model DDP cannot hold; the run's placement.json then says they do not apply
    d = load_spec(EXAMPLE, ["distributed.strategy=auto", "distributed.gradient_compression=fp16"]).distributed
    assert (d.strategy, d.gradient_compression) == ("auto", "fp16")
