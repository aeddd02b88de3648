"""Training from image / audio files against the same tensors pre-decoded in memory, same run.

Data: the examples' real files (`bash examples/get_data.sh`); models: the examples' and a light
conv net whose steps are cheap, so the data path weighs more. Three data paths for one spec, seed
and epoch count, augmentation off in all three:

- **cold**: from the files with an empty cache: list, hash, decode (worker processes when that
  pays), write the cache entry, normalise, split;
- **warm**: from the files again: list, hash, read and verify the cache entry, normalise, split
  (a re-run, a tuning trial);
- **in memory**: the same decoded tensors saved beforehand as an .npz (untimed), read back: a
  data path that decodes nothing.

Everything after loading is the same code on the same tensors, so a run is timed in two parts,
both in this run: the data load of each path (`Task.load`, interleaved `--repeat` times, median)
and the rest of `skylift.train.fit` (model build, every epoch's steps and validation, the final
test pass: a whole in-memory fit minus its load, median of `--fits`). samples/s = epochs x training
rows / (load + rest); the ratio is against in memory. Timing whole fits alone was tried first: on
this shared 2-core machine the same fit's step rate varied 3x between runs, far more than the data
path costs. Also reported: decode-only files/s, one process against worker processes, and what
the example's augmentation costs per batch against the model's forward + backward.
Run: `python benchmarks/media_train.py [--epochs 3] [--repeat 5] [--fits 2]`.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from skylift.data._media_cache import file_digest
from skylift.data._media_decode import decode_files
from skylift.data._media_files import list_media
from skylift.data._media_source import read_media, spec_prep
from skylift.spec import JobSpec, load_spec, parse_spec
from skylift.tasks import TASKS
from skylift.train import fit

ROOT = Path(__file__).resolve().parents[1]
LIGHT = [  # a model whose step is cheap, so the data path weighs more
    {"conv2d": {"filters": 8, "kernel_size": 3, "stride": 2, "activation": "relu"}},
    {"global_avgpool": {}},
    {"dense": {"units": 9}},
]


def _spec(example: str, data: Path, epochs: int, *extra: str) -> JobSpec:
    base = [f"data.train={data}", f"train.epochs={epochs}", "train.register_best=false"]
    return load_spec(ROOT / "examples" / example, [*base, *extra])


def _in_memory_spec(spec: JobSpec, npz: Path) -> JobSpec:
    """The same job reading the pre-decoded tensors: no media section, the same model and seed."""
    raw = spec.to_dict()
    raw["data"] = {k: v for k, v in raw["data"].items() if k not in ("image", "audio", "path_column")}
    raw["data"]["train"] = str(npz)
    raw.pop("tune")  # its space may name the media section
    return parse_spec(raw)


def _load_seconds(spec: JobSpec, cache: Path | None) -> float:
    tick = time.perf_counter()
    TASKS[spec.task].load(spec, cache)
    return time.perf_counter() - tick


def _fit_seconds(spec: JobSpec, home: Path, run_id: str) -> float:
    tick = time.perf_counter()
    fit(spec, home=home, run_id=run_id)
    return time.perf_counter() - tick


def compare(
    label: str, spec: JobSpec, work: Path, repeat: int, fits: int, augmented: JobSpec | None
) -> list[str]:
    """Rows of the cold / warm / in-memory table for one data set and model."""
    files = list_media(spec.data.train, "image" if spec.data.image else "audio")
    ds = read_media(files, spec_prep(spec.data, files), None, None)
    work.mkdir(parents=True)
    npz = work / "decoded.npz"
    np.savez(npz, x=ds.x, y=ds.y)
    memory_spec = _in_memory_spec(spec, npz)
    rows = round(len(ds) * (1 - spec.data.test_split) * (1 - spec.data.validation_split))
    samples = spec.train.epochs * rows
    loads: dict[str, list[float]] = {"cold": [], "warm": [], "memory": []}
    for r in range(repeat):
        cache = work / f"cache-{r}"
        loads["memory"].append(_load_seconds(memory_spec, None))
        loads["cold"].append(_load_seconds(spec, cache))
        loads["warm"].append(_load_seconds(spec, cache))
        shutil.rmtree(cache)
    load = {k: statistics.median(v) for k, v in loads.items()}
    home = work / "home"
    _fit_seconds(memory_spec, home, "warmup")  # one-time costs (first forward, allocator)
    rest = statistics.median(_fit_seconds(memory_spec, home, f"m{r}") - load["memory"] for r in range(fits))
    memory_rate = samples / (rest + load["memory"])
    out = []
    for kind in ("cold", "warm", "memory"):
        rate = samples / (rest + load[kind])
        out.append(
            f"| {label} | {kind} | {load[kind]:.2f} | {rest:.1f} | {rate:,.0f} | {rate / memory_rate:.3f}x |"
        )
    if augmented is not None:
        out.append(augmentation_cost(label, augmented, work / "cache-augment"))
    shutil.rmtree(home)
    return out


def augmentation_cost(label: str, spec: JobSpec, cache: Path, batch: int = 64, calls: int = 30) -> str:
    """ms per training batch: the spec's augmentation, against the model's forward + backward."""
    from skylift.train.loop import setup

    data, net = setup(spec, cache.parent)  # (the cache lands under cache.parent / "cache")
    assert data.augment is not None
    idx_b = torch.arange(batch)
    x_bS, y_b = data.train.take(idx_b)
    tick = time.perf_counter()
    for epoch in range(calls):
        data.augment(x_bS, idx_b, epoch + 1)
    augment_ms = (time.perf_counter() - tick) / calls * 1000
    net.train()
    tick = time.perf_counter()
    for _ in range(calls):
        net.zero_grad()
        torch.nn.functional.cross_entropy(net(x_bS), y_b).backward()
    step_ms = (time.perf_counter() - tick) / calls * 1000
    return (
        f"| {label} | augmentation (flip, shift 3 px, rotate 10 deg) | {augment_ms:.1f} ms per {batch} rows "
        f"| forward + backward {step_ms:.1f} ms | | {augment_ms / step_ms:.1%} of the step |"
    )


def decode_rates(spec: JobSpec, label: str) -> str:
    """files/s decoding every file: here alone, then with worker processes (as many as cores)."""
    files = list_media(spec.data.train, "image" if spec.data.image else "audio")
    prep = spec_prep(spec.data, files)
    paths = [str(p) for p in files.paths]
    digests = [file_digest(p) for p in files.paths]
    tick = time.perf_counter()
    decode_files(paths, digests, prep, workers=1)
    one = len(paths) / (time.perf_counter() - tick)
    tick = time.perf_counter()
    decode_files(paths, digests, prep, parallel_after_s=0.0)
    many = len(paths) / (time.perf_counter() - tick)
    cores = len(os.sched_getaffinity(0))
    return f"| {label} | {len(paths):,} | {one:,.0f} | {many:,.0f} ({cores} cores) | {many / one:.2f}x |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=5, help="data loads per path (median)")
    parser.add_argument("--fits", type=int, default=2, help="whole in-memory fits (median)")
    parser.add_argument("--images", type=Path, default=ROOT / "examples" / "data" / "emoji")
    parser.add_argument("--audio", type=Path, default=ROOT / "examples" / "data" / "spoken_language")
    args = parser.parse_args()
    for folder in (args.images, args.audio):
        if not folder.is_dir():
            raise SystemExit(
                f"{folder}: not found; fetch the examples' data first: bash examples/get_data.sh"
            )
    print(
        f"# {platform.node()} {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"numpy {np.__version__}, epochs {args.epochs}, repeat {args.repeat}, fits {args.fits}"
    )
    off = ("data.image.augment={}",)
    image = _spec("image_folder.yaml", args.images, args.epochs, *off)
    light = _spec("image_folder.yaml", args.images, args.epochs, *off, f"model.layers={LIGHT}")
    audio = _spec("audio_kws.yaml", args.audio, args.epochs, "data.audio.augment={}")
    print("\n| decode | files | files/s, 1 process | files/s, worker processes | speed-up |")
    print("|---|---|---|---|---|")
    print(decode_rates(image, "emoji PNG 64x64 -> 32x32 RGB"))
    print(decode_rates(audio, "prompts WAV 8 kHz -> log-mel [40, 151]"))
    print("\n| data, model | data path | load s (median) | rest of the fit s | samples/s | vs in memory |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="skylift-media-bench-") as tmp:
        work = Path(tmp)
        augmented = _spec("image_folder.yaml", args.images, args.epochs)
        runs = (
            ("emoji, example ResNet", image, augmented),
            ("emoji, light conv", light, None),
            ("prompts, example TC-ResNet", audio, None),
        )
        for label, spec, with_augment in runs:
            for row in compare(
                label,
                spec,
                work / label.replace(" ", "").replace(",", "-"),
                args.repeat,
                args.fits,
                with_augment,
            ):
                print(row, flush=True)


if __name__ == "__main__":
    main()
