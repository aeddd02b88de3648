"""`skylift tune`: a study over the spec's `tune.space`, with a progress bar and a table of trials."""

from __future__ import annotations

import argparse
from typing import Any

from skylift.errors import SpecError


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    from skylift.cli._train import _positive

    t = sub.add_parser("tune", parents=[common], help="search hyper-parameters (Optuna) over training runs")
    t.add_argument("spec", help="job spec YAML whose tune.space lists the dotted fields to search")
    t.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a spec field for every trial, e.g. --set train.epochs=3 (repeatable)",
    )
    t.add_argument(
        "--trials", type=_positive, help="trials in the study in total; a re-run resumes (default: spec)"
    )
    t.add_argument("--parallel", type=_positive, help="trial processes at once (default: spec)")
    t.add_argument("--sampler", choices=["tpe", "random", "grid", "gp", "cmaes"], help="default: spec (tpe)")
    t.add_argument("--pruner", choices=["hyperband", "median", "none"], help="default: spec (hyperband)")
    t.add_argument("--study", help="study name (default: the spec's name)")
    t.add_argument(
        "--storage",
        metavar="URL",
        help="postgresql://USER:PASSWORD@HOST:PORT/DB to share a study between machines, or "
        "journal:PATH (default: SKYLIFT_HOME/studies/STUDY/journal.log)",
    )
    t.add_argument("--timeout", type=float, metavar="S", help="start no new trial after S seconds")
    t.add_argument(
        "--workers", type=_positive, help="data-parallel processes per trial (default: spec, or 1)"
    )
    t.add_argument("--seed", type=int, help="sampler seed (default: spec's tune.seed)")
    t.add_argument(
        "--key-file", help="master key to encrypt the registered model (default: $SKYLIFT_MASTER_KEY)"
    )
    t.set_defaults(run=_tune)  # fmt: skip


class _Progress:
    """Trials done / pruned / failed and the best value so far, as one rich progress bar."""

    def __init__(self, console: Any, metric: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console, self.metric = console, metric
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.task: Any = None

    def start(self, study: str, total: int) -> None:
        self.task = self.bar.add_task(f"study {study}", total=total, detail="")
        self.bar.start()

    def update(self, counts: dict[str, int], best: float | None) -> None:
        if self.task is None:
            return
        done = counts["complete"] + counts["pruned"]
        shown = f"{best:.4f}" if best is not None else "-"
        detail = (
            f"complete {counts['complete']}  pruned {counts['pruned']}  failed {counts['failed']}  "
            f"running {counts['running']}  best {self.metric} {shown}"
        )
        self.bar.update(self.task, completed=done, detail=detail)

    def note(self, text: str) -> None:
        self.bar.console.print(text)

    def close(self) -> None:
        self.bar.stop()


_FULL_PATH = 20  # characters: a path this short is shown whole (e.g. train.optimizer.lr)


def _short(paths: list[str]) -> list[str]:
    """Each dotted path cut to its shortest ending that is still unique among `paths` (narrow
    columns cut long names, and `model.layers.0.dense.units` would read like `model.layers.2...`)."""
    parts = [p.split(".") for p in paths]
    out = []
    for i, p in enumerate(parts):
        if len(paths[i]) <= _FULL_PATH:
            out.append(paths[i])
            continue
        k = min(2, len(p))  # two names at least: `optimizer.lr`, not a bare `lr`
        while k < len(p) and any(q[-k:] == p[-k:] for j, q in enumerate(parts) if j != i):
            k += 1
        out.append(".".join(p[-k:]))
    return out


def _table(result: Any) -> Any:
    from rich.table import Table

    names = sorted({p for r in result.trials for p in r.params})
    table = Table("#", "state", result.metric, "seconds", *_short(names), title=f"study {result.study}",
                  title_justify="left")  # fmt: skip
    for r in result.trials:
        value = f"{r.value:.4f}" if r.value is not None else "-"
        state = r.state + (f" (retry of {r.retry_of})" if r.retry_of is not None else "")
        if result.best is not None and r.number == result.best.number:
            state = f"[bold green]{state} *best*[/]"
        seconds = f"{r.seconds:.1f}" if r.seconds is not None else "-"
        table.add_row(str(r.number), state, value, seconds, *(_fmt(r.params.get(n)) for n in names))
    return table


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _tune(args: argparse.Namespace) -> int:
    import warnings

    from rich.console import Console

    from skylift.security import master_key_from_env
    from skylift.spec import load_spec
    from skylift.tune import TuneOptions, tune

    if args.timeout is not None and args.timeout <= 0:
        raise SpecError(f"--timeout must be > 0 seconds, got {args.timeout:g}")
    spec = load_spec(args.spec, args.overrides)
    key = master_key_from_env(args.key_file)
    options = TuneOptions(args.trials, args.parallel, args.sampler, args.pruner, args.study, args.storage,
                          args.timeout, args.workers, args.seed)  # fmt: skip
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our table replaces its per-trial lines
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    console = Console()
    progress = _Progress(console, spec.tune.metric)
    try:
        result = tune(spec, options, home=args.home, observer=progress, master_key=key)
    finally:
        progress.close()
    console.print(_table(result))
    if result.best is not None:
        b = result.best
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in b.params.items())
        console.print(f"best trial {b.number}: {result.metric}={b.value:.4f} ({params})")
    else:
        console.print("no trial completed yet")
    console.print(f"study folder: {result.folder} (history.png, importance.png); storage {result.storage}")
    if result.registered:
        console.print(f"registered model: [bold]{result.registered}[/]")
    if result.interrupted:
        console.print("interrupted: re-run the same command to resume the study")
        return 130
    return 0
