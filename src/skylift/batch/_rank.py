"""One rank of a prediction job: agree on the plan, claim chunks, post results; the writer assembles.

Every rank opens the model and the input and posts what it sees; all must agree (model version,
options, chunks). The writer (node 0's first worker) opens the work folder and posts which
chunks are finished. Then each rank claims pending chunks from atomic counters, first from its
own contiguous block, then from the others' (so a slow rank just takes fewer), and posts each
result; the writer records its own and everyone's results as part files as they arrive and,
once all are in, assembles the output in input order. A problem on any rank is posted and ends
every rank with the same one-line error.

Board keys: `open/<rank>`, `done`, `claim/<block>`, `ready` + `ready/<i>` (results in arrival
order), `errors` + `error`, `outcome`.
"""

from __future__ import annotations

import hashlib
import json
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from skylift import errors
from skylift.batch._board import Board
from skylift.batch._job import Opened, PredictJob, job_key, open_job
from skylift.batch._kinds import kind_of
from skylift.batch._outputs import write_output
from skylift.batch._predictor import Outputs, decode_part
from skylift.batch._progress import PredictObserver
from skylift.batch._work import WorkDir, publish, write_staged
from skylift.errors import DataError, SkyliftError

if TYPE_CHECKING:
    from skylift.registry import LoadedModel

_HEAD = struct.Struct(">qq")  # a posted result: chunk index (-1: an error follows), rows


@dataclass(frozen=True)
class RankResult:
    """What a rank reports back to its launcher (plain data: it is sent between processes)."""

    writer: bool
    rows: int = 0
    """Rows in the output (writer only)."""
    computed_rows: int = 0
    """Rows predicted by this run, all ranks together (writer only)."""
    chunks: int = 0
    resumed_chunks: int = 0
    """Chunks finished by an earlier, interrupted run and not computed again."""
    predict_seconds: float = 0.0
    """From the first claim to the last result recorded (writer only): no start-up, no writing."""
    own_rows: int = 0
    """Rows this rank predicted itself (its share of the work)."""
    threads: int = 0
    """torch threads this rank ran on (set by the worker process; 0 when not recorded)."""
    output: str | None = None
    error: str | None = None
    error_type: str | None = None


def _error_bytes(exc: SkyliftError) -> bytes:
    return json.dumps([type(exc).__name__, str(exc)]).encode()


def as_error(kind: str, message: str) -> SkyliftError:
    """The skylift error of class `kind` (by name) carrying `message`."""
    cls = getattr(errors, kind, SkyliftError)
    return cls(message) if isinstance(cls, type) and issubclass(cls, SkyliftError) else SkyliftError(message)


def _raise(data: bytes) -> None:
    kind, text = json.loads(data)
    raise as_error(kind, text)


def run_rank(
    job: PredictJob,
    board: Board,
    *,
    node_rank: int = 0,
    local_rank: int = 0,
    master_key: Any = None,
    observer: Callable[[], PredictObserver] | None = None,
    arrow_threads: bool = True,
    opened: Opened | None = None,
    model: LoadedModel | None = None,
) -> RankResult:
    """Do this rank's part of `job`; errors come back in the result (so a launcher can report them).

    `opened`: the model and input when the caller has them open already (one process only);
    `model`: the verified model when the caller has it (the input is then opened here).
    """
    with ExitStack() as stack:
        try:
            ready = opened or (lambda: open_job(job, master_key, arrow_threads, model))
            return _Rank(job, board, stack).run(node_rank, local_rank, ready, observer)
        except SkyliftError as exc:
            return RankResult(writer=False, error=str(exc), error_type=type(exc).__name__)


class _Rank:
    """The steps of one rank, in order: `run` reads top to bottom."""

    def __init__(self, job: PredictJob, board: Board, stack: ExitStack) -> None:
        self.job, self.board, self.stack = job, board, stack

    def run(
        self,
        node_rank: int,
        local_rank: int,
        ready: Opened | Callable[[], Opened],
        observer: Callable[[], PredictObserver] | None,
    ) -> RankResult:
        job, board = self.job, self.board
        opened, writer = self._agree(ready, node_rank, local_rank)
        source = opened.source
        self.stack.callback(source.close)
        is_writer = board.rank == writer
        n = source.chunk_count
        work = WorkDir(job.output_path, job_key(job, opened.weights, source.identity()))
        done_N = self._finished(work, is_writer, n, {"model": job.model, "input": source.identity()})
        pending = [int(k) for k in np.flatnonzero(done_N == 0)]
        blocks = [
            pending[s * len(pending) // board.world : (s + 1) * len(pending) // board.world]
            for s in range(board.world)
        ]
        kind = kind_of(opened.model)
        outputs = kind.outputs(opened.model, job.proba, job.top_k)
        predictor = kind.predictor(opened.model, outputs)
        display = observer() if (observer is not None and is_writer) else None
        if display is not None:
            self.stack.callback(display.close)
            total = source.rows if source.rows is not None else source.estimated_rows()
            display.start(total or None, sum(_part_rows(work.part(k)) for k in range(n) if done_N[k]))
        tick = time.perf_counter()
        try:
            computed, own = self._predict(predictor, source, blocks, work if is_writer else None, display)
        except SkyliftError as exc:
            self._fail(exc)
            if is_writer:
                if isinstance(exc, DataError):
                    work.remove()  # bad input: its finished chunks are of no use to a corrected file
                board.set("outcome", _error_bytes(exc))
            raise
        if not is_writer:
            outcome = board.get("outcome")  # every node ends the way the writer does
            if outcome != b"ok":
                _raise(outcome)
            return RankResult(writer=False, own_rows=own)
        predicting = time.perf_counter() - tick
        if display is not None:
            display.finish()
            display.close()
        try:
            rows = _assemble(job, work, n, outputs, [str(c) for c in opened.model.classes])
        except SkyliftError as exc:
            board.set("outcome", _error_bytes(exc))
            raise
        work.remove()
        board.set("outcome", b"ok")
        return RankResult(
            writer=True,
            rows=rows,
            computed_rows=computed,
            chunks=n,
            resumed_chunks=n - len(pending),
            predict_seconds=predicting,
            own_rows=own,
            output=job.output,
        )

    def _agree(
        self, ready: Opened | Callable[[], Opened], node_rank: int, local_rank: int
    ) -> tuple[Opened, int]:
        """Open the model and input, post what this rank sees, and check every rank saw the same."""
        job, board = self.job, self.board
        opened: Opened | None = None
        try:
            opened = ready if isinstance(ready, Opened) else ready()
            same = hashlib.sha256(json.dumps([job.model, job.options()]).encode()).hexdigest()
            mine: dict[str, Any] = {"plan": [node_rank, local_rank, opened.source.chunk_count]}
            mine["plan"] += [opened.source.features, same]
        except SkyliftError as exc:
            mine = {"error": [type(exc).__name__, str(exc)]}
        board.set(f"open/{board.rank}", json.dumps(mine).encode())
        seen = [json.loads(board.get(f"open/{r}")) for r in range(board.world)]
        for entry in seen:
            if "error" in entry:
                if opened is not None:
                    opened.source.close()
                raise as_error(*entry["error"])
        assert opened is not None
        return opened, _writer([entry["plan"] for entry in seen], job)

    def _finished(self, work: WorkDir, is_writer: bool, n: int, identity: dict[str, Any]) -> np.ndarray:
        """0/1 per chunk: finished by an earlier run (the writer reads its work folder and posts it)."""
        if not is_writer:
            posted = self.board.get("done")
            if posted[:1] == b"!":
                _raise(posted[1:])
            return np.frombuffer(posted[1:], dtype=np.uint8)
        try:
            self.stack.callback(work.close)
            done = work.open({**identity, "options": self.job.options()})
        except SkyliftError as exc:
            self.board.set("done", b"!" + _error_bytes(exc))
            raise
        done_N = np.isin(np.arange(n), sorted(done)).astype(np.uint8)
        self.board.set("done", b"+" + done_N.tobytes())
        return done_N

    def _claims(self, blocks: list[list[int]]) -> Iterator[int]:
        """Pending chunks for this rank: its own block first, then what is left of the others'."""
        board = self.board
        for step in range(board.world):
            s = (board.rank + step) % board.world
            while not board.add("errors", 0):
                i = board.add(f"claim/{s}", 1) - 1
                if i >= len(blocks[s]):
                    break
                yield blocks[s][i]

    def _predict(
        self,
        predictor: Any,
        source: Any,
        blocks: list[list[int]],
        work: WorkDir | None,
        display: PredictObserver | None,
    ) -> tuple[int, int]:
        """Predict claimed chunks; the writer (`work` given) records everyone's results.

        Returns (rows recorded: all ranks' on the writer, else 0; rows this rank predicted).
        """
        board, job = self.board, self.job
        computed = received = own = 0

        def record(k: int, rows: int, data: bytes) -> None:
            nonlocal computed
            assert work is not None
            work.write_part(k, data)
            computed += rows
            if display is not None:
                display.advance(rows)

        def drain(wait: bool) -> None:
            """Record results posted by other ranks: those already there, or (wait) all still to come."""
            nonlocal received
            while received < board.add("ready", 0) or (wait and computed_chunks[0] < total):
                key = f"ready/{received}"
                posted = board.get(key)
                board.delete(key)
                received += 1
                k, rows = _HEAD.unpack_from(posted)
                if k < 0:
                    _raise(posted[_HEAD.size :])
                record(k, rows, posted[_HEAD.size :])
                computed_chunks[0] += 1

        total = sum(len(b) for b in blocks)
        computed_chunks = [0]
        for k in self._claims(blocks):
            rows, data = predictor.chunk(source.read(k, job.batch_rows))
            own += rows
            if work is None:
                i = board.add("ready", 1) - 1
                board.set(f"ready/{i}", _HEAD.pack(k, rows) + data)
                continue
            record(k, rows, data)
            computed_chunks[0] += 1
            drain(wait=False)
        if board.add("errors", 0):
            _raise(board.get("error"))
        if work is not None:
            drain(wait=True)
        return computed, own

    def _fail(self, exc: SkyliftError) -> None:
        """Tell every rank: a flag for those claiming, a posted result for the writer."""
        board = self.board
        board.set("error", _error_bytes(exc))
        if board.add("errors", 1) == 1 and board.world > 1:
            i = board.add("ready", 1) - 1
            board.set(f"ready/{i}", _HEAD.pack(-1, 0) + _error_bytes(exc))


def _writer(plans: list[list[Any]], job: PredictJob) -> int:
    """The rank that writes: node 0's first worker. Every rank must run the same job on the same input."""
    chunks, features, same = plans[0][2:5]
    for node, _, c, f, s in plans:
        if s != same:
            raise errors.SpecError(
                f"node {node} runs another model version or other options than node {plans[0][0]}: "
                "give every node the same arguments and the same registered model"
            )
        if (c, f) != (chunks, features):
            raise DataError(
                f"{job.input}: node {node} reads {c} chunks of {f} features, node {plans[0][0]} reads "
                f"{chunks} of {features}: every node needs the same input at the same path"
            )
    writers = [r for r, (node, local, *_) in enumerate(plans) if node == 0 and local == 0]
    if len(writers) != 1:
        raise errors.SpecError(
            f"{len(writers)} workers claim to be node 0's first: give each node a distinct --node-rank"
        )
    return writers[0]


def _damaged(path: Path) -> errors.IntegrityError:
    return errors.IntegrityError(f"{path} is damaged; delete {path.parent} to start this job over")


def _part_rows(path: Path) -> int:
    """Rows of a part file, from the header of its first array."""
    fmt = np.lib.format
    try:
        with open(path, "rb") as f:
            version = fmt.read_magic(f)
            shape = (fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0)(f)[0]
        return int(shape[0])
    except (ValueError, OSError, IndexError):
        raise _damaged(path) from None


def _assemble(job: PredictJob, work: WorkDir, n: int, outputs: Outputs, classes: list[str]) -> int:
    """Write the parts, in input order, to a temp file beside the output, then publish it."""

    def parts() -> Iterator[list[np.ndarray]]:
        for k in range(n):
            with open(work.part(k), "rb") as f:
                try:
                    arrays = decode_part(f, outputs)
                except (ValueError, OSError):
                    raise _damaged(work.part(k)) from None
            yield arrays

    rows = sum(_part_rows(work.part(k)) for k in range(n))
    output = job.output_path
    tmp = write_staged(output, lambda f: write_output(f, job.output_format, classes, outputs, rows, parts))
    publish(tmp, output, job.overwrite)
    return rows
