"""Autoscaling under a load ramp: replicas over time, and how fast the pool reacts.

Serves the MNIST MLP (examples/mnist_mlp.yaml, 1 epoch, in a temporary home) with
`skylift serve --replicas 1:MAX --cache none` (MAX: the cores, unless --max) and drives it with
overlapping `skylift bench serve` processes that make a staircase of kept-alive connections, up and
down: --levels concurrencies, --step seconds each (4, 16, 64, 128, 64, 16, 4 by default), then
--tail seconds with no load. Every 0.25 s it reads the server's /metrics (replicas by state,
target, queue wait, requests answered) and timestamps each line the server logs.

Reports: reaction times (load step -> scale-up decision -> new replica serving -> queue wait back
under the target; load drop -> scale-down decision -> replica drained), the requests of every
bench (failed ones included), and a PNG of concurrency, req/s, queue wait and replicas over time.
Run: `python benchmarks/serve_autoscale.py [--serve-flags "--scale-up-wait-ms 5"]`
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent / "examples" / "mnist_mlp.yaml"
POLL_S = 0.25


@dataclass
class Trace:
    t: list[float] = field(default_factory=list)
    serving: list[int] = field(default_factory=list)
    target: list[int] = field(default_factory=list)
    wait_ms: list[float] = field(default_factory=list)
    answered: list[float] = field(default_factory=list)
    log: list[tuple[float, str]] = field(default_factory=list)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _train(home: Path) -> None:
    code = (
        "from pathlib import Path; from skylift.spec import load_spec; from skylift.train import fit; "
        f"fit(load_spec(Path({str(EXAMPLE)!r}), ['train.epochs=1', 'distributed.workers=1']), "
        f"home=Path({str(home)!r}))"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def _scrape(url: str) -> dict[str, float]:
    """The series of one /metrics scrape this benchmark plots, summed over replicas."""
    text = urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {"answered": 0.0}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        if name.startswith("skylift_requests_total{") and 'route="v2/models/infer"' in name:
            out["answered"] += float(value)
        elif name in (
            'skylift_replicas{state="serving"}',
            "skylift_replicas_target",
            "skylift_autoscale_queue_wait_seconds",
        ):
            out[name] = float(value)
    return out


def _follow(proc: subprocess.Popen[str], trace: Trace) -> None:
    """The server's lines with the monotonic time each arrived (made relative at the end)."""
    assert proc.stdout is not None
    for line in proc.stdout:
        trace.log.append((time.monotonic(), line.rstrip()))


def _poll(url: str, trace: Trace, t0: float, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            got = _scrape(url)
        except OSError:
            time.sleep(POLL_S)
            continue
        trace.t.append(time.monotonic() - t0)
        trace.serving.append(int(got.get('skylift_replicas{state="serving"}', 0)))
        trace.target.append(int(got.get("skylift_replicas_target", 0)))
        trace.wait_ms.append(1000 * got.get("skylift_autoscale_queue_wait_seconds", 0.0))
        trace.answered.append(got["answered"])
        time.sleep(POLL_S)


def _staircase(levels: list[int], step: float) -> list[tuple[float, float, int]]:
    """(start, duration, connections) of overlapping bench processes whose sum climbs `levels` up
    to the peak and back down (a pyramid: each process holds one step's increment)."""
    peak = levels.index(max(levels))
    up, down = levels[: peak + 1], levels[peak:]
    assert up == sorted(up) and down == sorted(down, reverse=True) and up[::-1] == down, levels
    plan, below = [], 0
    for i, c in enumerate(up):
        plan.append((i * step, (len(levels) - 2 * i) * step, c - below))
        below = c
    return plan


def _reaction(trace: Trace, plan: list[tuple[float, float, int]], target_ms: float) -> dict[str, float]:
    """Seconds from the load step that caused each change to what followed it."""
    out: dict[str, float] = {}
    ups = [
        (t, line)
        for t, line in trace.log
        if re.search(r"autoscale: \d+ -> \d+ replicas: (queue|\d+ queued)", line)
    ]
    downs = [(t, line) for t, line in trace.log if "replicas: idle" in line]
    if ups:
        t_up = ups[0][0]
        step = max(s for s, _, _ in plan if s <= t_up)  # the load step it answered
        out["scale-up decision after the step that caused it"] = t_up - step
        joined = [t for t, line in trace.log if re.search(r"replica \d+ serving", line) and t > t_up]
        if joined:
            out["new replica serving after the decision"] = joined[0] - t_up
            calm = [
                t for t, w in zip(trace.t, trace.wait_ms, strict=True) if t > joined[0] + 2 and w < target_ms
            ]
            if calm:
                out["queue wait back under the target after the step"] = calm[0] - step
    if downs:
        t_down = downs[0][0]
        busy = [t for t, w in zip(trace.t, trace.wait_ms, strict=True) if t < t_down and w >= target_ms / 2]
        if busy:
            out["scale-down decision after the last window over half the target"] = t_down - busy[-1]
        drained = [t for t, line in trace.log if "drained in" in line and t > t_down]
        if drained:
            out["replica drained after the decision"] = drained[0] - t_down
    return out


def _plot(
    trace: Trace, plan: list[tuple[float, float, int]], target_ms: float, png: Path, title: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_load, ax_wait, ax_reps) = plt.subplots(3, 1, figsize=(10, 7.5), sharex=True)
    horizon = trace.t[-1] if trace.t else 1.0
    grid = [i * 0.25 for i in range(int(horizon / 0.25) + 1)]
    offered = [sum(c for s, d, c in plan if s <= x < s + d) for x in grid]
    ax_load.step(grid, offered, where="post", color="tab:gray", label="connections (scheduled)")
    ax_load.set_ylabel("connections")
    rate_ax = ax_load.twinx()
    # Over 2 s (8 scrapes): each replica's counters move once per 0.5 s snapshot. A drained
    # replica's counters leave /metrics with it: that drop is no rate at all.
    k = 8
    rates = [
        (trace.answered[i] - trace.answered[i - k]) / (trace.t[i] - trace.t[i - k])
        if trace.answered[i] >= trace.answered[i - k]
        else float("nan")
        for i in range(k, len(trace.t))
    ]
    rate_ax.plot(trace.t[k:], rates, color="tab:blue", linewidth=0.8, label="answered req/s")
    rate_ax.set_ylabel("req/s", color="tab:blue")
    ax_load.legend(loc="upper left")
    rate_ax.legend(loc="upper right")
    ax_wait.plot(trace.t, trace.wait_ms, color="tab:orange", label="queue wait (2 s mean)")
    ax_wait.axhline(target_ms, color="tab:red", linestyle="--", label=f"scale-up target {target_ms:g} ms")
    ax_wait.axhline(target_ms / 2, color="tab:green", linestyle=":", label="idle below")
    ax_wait.set_ylabel("ms")
    ax_wait.legend(loc="upper left")
    ax_reps.step(trace.t, trace.serving, where="post", color="tab:purple", label="replicas serving")
    ax_reps.step(trace.t, trace.target, where="post", color="tab:pink", linestyle="--", label="target")
    ax_reps.set_ylabel("replicas")
    ax_reps.set_xlabel("seconds")
    ax_reps.set_ylim(0, max(trace.target + trace.serving + [1]) + 1)
    ax_reps.legend(loc="upper left")
    for t, line in trace.log:
        if "autoscale:" in line:
            for ax in (ax_load, ax_wait, ax_reps):
                ax.axvline(t, color="black", linewidth=0.5, alpha=0.4)
    fig.suptitle(title)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--levels", default="4,16,64,128,64,16,4", help="connections per step, up then down")
    p.add_argument("--step", type=float, default=15.0, help="seconds per step")
    p.add_argument("--tail", type=float, default=45.0, help="seconds with no load at the end")
    p.add_argument("--max", type=int, default=len(os.sched_getaffinity(0)), help="MAX replicas")
    p.add_argument(
        "--serve-flags", default="", help="more `skylift serve` flags, e.g. '--scale-up-wait-ms 5'"
    )
    p.add_argument("--png", type=Path, default=HERE / "img" / "serve_autoscale.png")
    p.add_argument("--json", type=Path, help="write the trace and the figures here")
    args = p.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    plan = _staircase(levels, args.step)
    flags = shlex.split(args.serve_flags)
    target_ms = float(flags[flags.index("--scale-up-wait-ms") + 1]) if "--scale-up-wait-ms" in flags else 10.0

    with tempfile.TemporaryDirectory(prefix="skylift-autoscale-") as tmp:
        home = Path(tmp) / "home"
        _train(home)
        env = {**os.environ, "SKYLIFT_HOME": str(home)}
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        serve_cmd = [sys.executable, "-m", "skylift", "serve", "mnist-mlp", "--no-auth", "--cache", "none"]
        serve_cmd += ["--replicas", f"1:{args.max}", "--port", str(port), *flags]
        server = subprocess.Popen(
            serve_cmd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        trace, stop = Trace(), threading.Event()
        t0 = time.monotonic()
        threading.Thread(target=_follow, args=(server, trace), daemon=True).start()
        try:
            while True:
                try:
                    if urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2).status == 200:
                        break
                except OSError:
                    if server.poll() is not None:
                        raise SystemExit(
                            "the server exited:\n" + "\n".join(x for _, x in trace.log)
                        ) from None
                    time.sleep(0.2)
            time.sleep(3)  # a first window of idle load figures
            t0 = time.monotonic()  # the plot's zero: the first load step
            poller = threading.Thread(target=_poll, args=(url, trace, t0, stop), daemon=True)
            poller.start()
            benches = []
            for start, duration, conns in plan:
                while time.monotonic() - t0 < start:
                    time.sleep(0.05)
                out = Path(tmp) / f"bench-{start:g}.json"
                cmd = [sys.executable, "-m", "skylift", "bench", "serve", url, "--model", "mnist-mlp"]
                cmd += ["-c", str(conns), "-d", f"{duration:g}", "--warmup", "0", "--json", str(out)]
                benches.append((start, conns, out, subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)))
            for _, _, _, bench in benches:
                bench.wait()
            time.sleep(args.tail)
        finally:
            stop.set()
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(60)
        reports = [(s, c, json.loads(out.read_text())) for s, c, out, _ in benches if out.exists()]
    trace.log = [(t - t0, line) for t, line in trace.log]

    shown = " ".join(["serve --replicas", f"1:{args.max}", *flags])
    title = f"skylift {shown}: MNIST MLP, connections {args.levels}"
    _plot(trace, plan, target_ms, args.png, title)
    reaction = _reaction(trace, plan, target_ms)
    failed = sum(
        sum(r["errors"].values()) + sum(n for k, n in r["statuses"].items() if k != "200")
        for _, _, r in reports
    )
    print(f"serve: {' '.join(serve_cmd[3:])}")
    print(f"levels {levels} x {args.step:g} s, then {args.tail:g} s idle; plot: {args.png}")
    print("\n| bench | connections | requests | req/s | p50 ms | p99 ms | failed |")
    print("|---|---|---|---|---|---|---|")
    for start, conns, r in reports:
        bad = sum(r["errors"].values()) + sum(n for k, n in r["statuses"].items() if k != "200")
        lat = r["latency_ms"]
        print(
            f"| from {start:g} s | {conns} | {r['requests']:,} | {r['requests_per_s']:,.0f} | "
            f"{lat['p50']:.2f} | {lat['p99']:.2f} | {bad} |"
        )
    print(f"\nfailed requests in all: {failed}\n\n| reaction | seconds |\n|---|---|")
    for what, seconds in reaction.items():
        print(f"| {what} | {seconds:.1f} |")
    print("\nserver log (seconds from the first load step):")
    for t, line in trace.log:
        print(f"  {t:6.1f}  {line}")
    if args.json:
        args.json.write_text(json.dumps({"trace": trace.__dict__, "reaction": reaction, "failed": failed}))


if __name__ == "__main__":
    main()
