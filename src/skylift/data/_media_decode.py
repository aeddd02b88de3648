"""Decoding a list of media files into one array, in worker processes when that pays.

Each file is decoded by the same `ImagePrep.pixels` / `AudioPrep.decode` call that `evaluate`,
`predict` and `serve` make on one file, so a cached or batch-decoded row is bit-identical to what
serving computes. The first files are decoded here and timed; only when the rest would take more
than `PARALLEL_AFTER_S` do worker processes start. They are forked, as PyTorch's DataLoader
workers are: a fork starts in milliseconds and imports nothing again, where a spawned worker
re-imports the caller's main script (often torch: seconds) and breaks a script without the
`if __name__ == "__main__"` guard. The workers run no torch code, only Pillow, libsndfile, soxr
(built without OpenMP) and numpy (OpenBLAS re-creates its threads after a fork), so the threads
of the forking process are no hazard to them. Where fork does not exist they are spawned. BLAS
runs one thread while decoding, here and in the workers: its only work is a (frames x bins) @
(bins x mels) product per clip, far too small to split, and OpenBLAS threads that spin-wait for
work made two forked workers 10x slower than one process on this 2-core machine. A file that
changed since it was hashed is an error, so the cache never stores pixels under another file's
digest.

Shape legend: N files, H W C an image's pixels, M mel bands, F frames.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from skylift._cpus import usable_cores
from skylift.data._audio import AudioPrep
from skylift.data._image import ImagePrep
from skylift.data._media import Preprocessing, preprocessing_from_json
from skylift.errors import DataError

PARALLEL_AFTER_S = 1.0  # estimated serial seconds left above which worker processes are started
_PROBE_FILES = 16  # decoded here first, to time a file
_CHUNK_FILES = 64  # files per task at most: few round trips, a smooth progress bar
_MIN_CHUNK_FILES = 8

Progress = Callable[[int], None]  # called with the number of files just decoded


def item_layout(prep: Preprocessing) -> tuple[tuple[int, ...], str]:
    """(per-file shape, dtype) of what `decode_files` stores: uint8 pixels (H, W, C) or float32 (M, F)."""
    if isinstance(prep, ImagePrep):
        return (*prep.size, prep.channels), "uint8"
    return prep.shape, "float32"


def decode_files(
    paths: Sequence[str],
    digests: Sequence[str],
    prep: Preprocessing,
    *,
    workers: int | None = None,
    parallel_after_s: float = PARALLEL_AFTER_S,
    progress: Progress | None = None,
) -> np.ndarray:
    """Every file decoded, in order: uint8 (N, H, W, C) pixels or float32 (N, M, F) log-mel features.

    `workers`: processes to use at most (default: the cores this process may run on); 1 decodes
    here. Raises the first file's DataError (one line naming the file).
    """
    with _one_blas_thread():
        return _decode_files(paths, digests, prep, workers, parallel_after_s, progress)


def _decode_files(
    paths: Sequence[str],
    digests: Sequence[str],
    prep: Preprocessing,
    workers: int | None,
    parallel_after_s: float,
    progress: Progress | None,
) -> np.ndarray:
    shape, dtype = item_layout(prep)
    out_N = np.empty((len(paths), *shape), dtype=dtype)
    done = min(_PROBE_FILES, len(paths))
    tick = time.perf_counter()
    out_N[:done] = _decode(prep, paths[:done], digests[:done])
    if progress:
        progress(done)
    per_file = (time.perf_counter() - tick) / max(done, 1)
    left = len(paths) - done
    cores = workers or usable_cores()
    chunk = max(_MIN_CHUNK_FILES, min(_CHUNK_FILES, -(-left // (4 * cores))))  # >= 4 tasks a worker
    workers = min(cores, -(-left // chunk))
    if workers > 1 and per_file * left > parallel_after_s and not _daemonic():
        _decode_in_workers(prep, paths, digests, out_N, done, workers, chunk, progress)
        return out_N
    for lo in range(done, len(paths), _CHUNK_FILES):
        hi = min(lo + _CHUNK_FILES, len(paths))
        out_N[lo:hi] = _decode(prep, paths[lo:hi], digests[lo:hi])
        if progress:
            progress(hi - lo)
    return out_N


def _decode_in_workers(
    prep: Preprocessing,
    paths: Sequence[str],
    digests: Sequence[str],
    out_N: np.ndarray,
    start: int,
    workers: int,
    chunk: int,
    progress: Progress | None,
) -> None:
    import multiprocessing
    import warnings
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    settings = prep.to_json()
    spans = [(lo, min(lo + chunk, len(paths))) for lo in range(start, len(paths), chunk)]
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with (
        warnings.catch_warnings(),
        ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context(method), initializer=_limit_blas
        ) as pool,
    ):
        # Python >= 3.12 warns on any fork of a threaded process; see the module docstring for why
        # these workers are safe.
        warnings.simplefilter("ignore", DeprecationWarning)
        pending = {
            pool.submit(decode_chunk, settings, list(paths[lo:hi]), list(digests[lo:hi])): (lo, hi)
            for lo, hi in spans
        }
        while pending:
            finished, _ = wait(pending, return_when=FIRST_EXCEPTION)
            for future in finished:
                lo, hi = pending.pop(future)
                failure = future.exception()
                if failure is not None:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise failure
                out_N[lo:hi] = future.result()
                if progress:
                    progress(hi - lo)


def decode_chunk(settings: dict[str, Any], paths: list[str], digests: list[str]) -> np.ndarray:
    """A worker's task: `paths` decoded with the settings of `prep.to_json()`."""
    prep = preprocessing_from_json(settings)
    assert prep is not None  # the settings of a real prep
    return _decode(prep, paths, digests)


def _decode(prep: Preprocessing, paths: Sequence[str], digests: Sequence[str]) -> np.ndarray:
    shape, dtype = item_layout(prep)
    out = np.empty((len(paths), *shape), dtype=dtype)
    for i, (path, digest) in enumerate(zip(paths, digests, strict=True)):
        try:
            with open(path, "rb") as f:
                blob = f.read()
        except OSError as exc:
            raise DataError(f"{path}: cannot read ({exc.strerror})") from None
        if hashlib.sha256(blob).hexdigest() != digest:
            raise DataError(f"{path}: the file changed while it was being read; run again")
        if isinstance(prep, ImagePrep):
            out[i] = prep.pixels(blob, path)
        else:
            assert isinstance(prep, AudioPrep)
            out[i] = prep.decode(blob, path)
    return out


def _one_blas_thread() -> contextlib.AbstractContextManager[Any]:
    """BLAS limited to one thread for the block (threadpoolctl comes with scikit-learn)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a dependency of scikit-learn, which skylift requires
        return contextlib.nullcontext()
    limits: contextlib.AbstractContextManager[Any] = threadpool_limits(1, user_api="blas")
    return limits


def _limit_blas() -> None:
    """A worker's initializer: one BLAS thread for its whole life."""
    _one_blas_thread().__enter__()


def _daemonic() -> bool:
    """A daemonic process (a multiprocessing worker) may not start processes of its own."""
    import multiprocessing

    return bool(multiprocessing.current_process().daemon)
