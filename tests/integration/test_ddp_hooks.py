"""DDP gradient sync settings with real processes (gloo, 2 workers): fp16 compression trains close to
fp32 and is recorded in the run; bucket sizes leave fp32 losses bit-identical; bad values refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from skylift.spec import load_spec
from skylift.train.launch import _gradient_sync, launch, place
from tests.conftest import EXAMPLE, finish
from tests.conftest import skylift_process as _skylift

pytestmark = pytest.mark.slow

# An MLP without dropout or batch norm: its losses move smoothly with a small change to the updates
# (the example's dropout + batch-norm MLP amplifies one: a 1% learning-rate change moves its epoch-2
# val_loss by 4%, as much as fp16 compression did, which would make any tolerance meaningless).
MLP = (
    "model.layers=[{dense: {units: 64, activation: relu}}, {dense: {units: 64, activation: relu}},"
    " {dense: {units: 10}}]"
)
SHORT = [MLP, "train.epochs=2", "train.threads=1", "data.test_split=0", "train.register_best=false"]
# Compression rounds each averaged gradient to 11 significant bits (fp16) or 8 (bf16). Measured over
# these 2 epochs (epoch losses and val_losses, largest relative difference from fp32): fp16 1.1e-5,
# bf16 1.8e-3, while a 1% learning-rate change moves them by 1.7e-2. Each tolerance keeps a margin
# over its measurement and stays below the learning-rate change: a hook that loses or garbles
# gradients is caught, rounding on another CPU is not.
FP16_REL_TOL = 1e-3
BF16_REL_TOL = 1e-2


def _train(home: Path, run_id: str, *overrides: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-epoch metrics and placement.json of a 2-worker run of the MLP above on the example's data."""
    spec = load_spec(EXAMPLE, [*SHORT, *overrides])
    placement = place(spec, 2, None, 0, None, home=home)
    result = launch(spec, placement, home=home, run_id=run_id)
    assert result is not None
    recorded = json.loads((result.run_dir / "placement.json").read_text())
    return result.history, recorded


@pytest.fixture(scope="module")
def fp32(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The default 2-worker run: fp32 gradients in one bucket, as before these settings existed."""
    return _train(tmp_path_factory.mktemp("home"), "fp32")


def _losses(history: list[dict[str, Any]]) -> list[float]:
    return [v for row in history for v in (row["loss"], row["val_loss"])]


def test_default_sync_is_recorded_as_one_fp32_bucket(
    fp32: tuple[list[dict[str, Any]], dict[str, Any]],
) -> None:
    sync = fp32[1]["gradient_sync"]
    assert sync["gradient_compression"] == "none" and sync["bucket_mb"] == 25.0
    assert sync["reason"] == "bucket_mb auto: 25.0 (one bucket: one all_reduce per step)"


def test_fp16_compression_trains_close_to_fp32_and_is_recorded(
    fp32: tuple[list[dict[str, Any]], dict[str, Any]], home: Path
) -> None:
    history, recorded = _train(home, "fp16", "distributed.gradient_compression=fp16")
    assert recorded["gradient_sync"]["gradient_compression"] == "fp16"
    compressed, exact = _losses(history), _losses(fp32[0])
    assert compressed != exact  # the hook took effect: fp16 rounding changed the updates
    assert compressed == pytest.approx(exact, rel=FP16_REL_TOL), (compressed, exact)
    assert history[-1]["val_accuracy"] == pytest.approx(fp32[0][-1]["val_accuracy"], abs=0.02)


def test_bucket_size_leaves_fp32_losses_bit_identical(
    fp32: tuple[list[dict[str, Any]], dict[str, Any]], home: Path
) -> None:
    # 1 KiB: one all_reduce per layer (3) instead of one for the whole model. Two ranks' sums are
    # the same additions whatever the bucket, so nothing may change, not even the last bit.
    history, recorded = _train(home, "small-buckets", "distributed.bucket_mb=0.001")
    assert recorded["gradient_sync"] == {
        "gradient_compression": "none",
        "bucket_mb": 0.001,
        "reason": "",
    }
    assert _losses(history) == _losses(fp32[0])


def test_bf16_compression_runs_on_gloo_and_trains_close_to_fp32(
    fp32: tuple[list[dict[str, Any]], dict[str, Any]], home: Path
) -> None:
    # torch's own bf16 hook refuses a CPU build; skylift's gloo variant must reach the workers
    history, recorded = _train(home, "bf16", "distributed.gradient_compression=bf16")
    assert recorded["gradient_sync"]["gradient_compression"] == "bf16"
    compressed, exact = _losses(history), _losses(fp32[0])
    assert compressed != exact
    assert compressed == pytest.approx(exact, rel=BF16_REL_TOL), (compressed, exact)


def test_one_worker_records_no_gradient_sync(home: Path) -> None:
    spec = load_spec(EXAMPLE, [*SHORT, "distributed.gradient_compression=bf16"])
    assert place(spec, 1, None, 0, None, home=home).gradient_sync is None  # nothing to synchronise


def test_a_bad_setting_is_refused_in_one_line_before_training(home: Path) -> None:
    typo = "distributed.gradient_compression=fp8"
    code, out, err = finish(_skylift(home, "train", str(EXAMPLE), "--workers", "2", "--set", typo), 120)
    assert code == 2 and out == ""
    assert err.strip().endswith(
        "distributed.gradient_compression: input should be 'none', 'fp16' or 'bf16', got 'fp8'"
    )
    assert len(err.strip().splitlines()) == 1 and not (home / "runs").exists()


def test_fsdp_chosen_by_auto_records_that_the_ddp_settings_do_not_apply() -> None:
    d = load_spec(EXAMPLE, ["distributed.strategy=auto", "distributed.gradient_compression=fp16"]).distributed
    sync = _gradient_sync(d, None, 2, "fsdp")
    assert sync is not None and sync["gradient_compression"] == "none" and "do not apply" in sync["reason"]
    assert _gradient_sync(d.model_copy(update={"gradient_compression": "none"}), None, 2, "fsdp") is None
