"""llmload's streaming client, side by side with a minimal asyncio reference client.

One command, one run, about 5.5 minutes on 2 cores (needs the ``bench`` extra:
``pip install -e '.[bench]'``)::

    .venv/bin/python benchmarks/client_bench.py            # every workload
    .venv/bin/python benchmarks/client_bench.py --only paced64 --json out.json
    .venv/bin/python benchmarks/client_bench.py --only --soak 1000000   # RSS over 1M requests

For each workload it starts ``benchmarks/_truth_server.py`` (the simulator's
``fixed`` profile plus a log of every token's true send time; pinned to core
0 with ``taskset`` where it exists) and drives it, in turn, with

* llmload: headless Locust, ``benchmarks/_locust_bench.py``, one process
  (pinned to core 1), closed-loop users with no think time, with kernel
  receive stamps (``--llm-timestamps kernel``, its default);
* llmload-user: the same with user-space stamps (``--llm-timestamps user``);
* the reference: ``benchmarks/_ref_client.py``, asyncio + aiohttp (+ uvloop)
  + orjson, same request body, same concurrency, same core.

It measures, over a steady-state window that starts after a warm-up (so
start-up, imports and connection set-up are excluded): the client's CPU
seconds (user + system of the process and its children, from ``/proc`` via
psutil) per 1M output tokens, and tokens/s as the *server* counted them. For
paced workloads it matches every request in the window to the server's log by
its id and reports TTFT and ITL against the truth: the client's p50/p99 minus
the true p50/p99 over the same requests (true TTFT = first token write minus
request receipt; true ITL = gap between consecutive token writes), and the
per-request error distribution (client TTFT minus true TTFT).

Workloads: ``paced64`` (64 streams, 256 tokens, TTFT 50 ms, ITL 10 ms, the
streams' starts spread over one request's duration, so every token is a wake-up
of its own: the client's worst case), ``paced64sync`` (the same, all streams
started together: tokens arrive in bursts, one per step, as from a
continuous-batching server), ``full64`` (64 streams at full speed),
``paced1000`` (1,000 streams, 64 tokens, TTFT 50 ms, ITL 40 ms, staggered),
``procs`` (llmload at full speed, 128 streams, with ``--processes 2`` against
one process, unpinned), ``overload64`` (paced64 with another process spinning
on the client's core, so the client gets about half of it); ``--soak N`` also runs llmload until the server has
answered N 4-token requests and samples its RSS. No other tool (``vllm bench
serve``, GuideLLM, AIPerf) is run: none is installed here.
Take figures only when the machine is otherwise idle (the load average is
printed before and after). Results: docs/performance.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmload.distribution import Distribution  # noqa: E402

PY = sys.executable
LOCUST = [PY, "-m", "locust"]
TASKSET = shutil.which("taskset")


@dataclass(frozen=True)
class Workload:
    """One workload: streams, answer length, server pacing, and timing of the run."""

    name: str
    streams: int
    max_tokens: int
    ttft_ms: float
    itl_ms: float
    warmup_s: float
    window_s: float
    truth: bool
    continuous_usage: bool = True
    staggered: bool = True
    spin: bool = False  # another process spins on the client's core: the client gets about half of it

    @property
    def paced(self) -> bool:
        return self.itl_ms > 0

    @property
    def stagger_s(self) -> float:
        """One request's duration: streams start spread over it, so paced ones are not phase-locked."""
        if not self.staggered:
            return 0.0
        return (self.ttft_ms + (self.max_tokens - 1) * self.itl_ms) / 1e3


WORKLOADS = {
    "paced64": Workload("paced64", 64, 256, 50.0, 10.0, warmup_s=5.0, window_s=14.0, truth=True),
    # All streams start together and stay in step, as on a continuous-batching server whose decode
    # step emits a token for every running request at once: the client reads a burst per step.
    "paced64sync": Workload(
        "paced64sync", 64, 256, 50.0, 10.0, warmup_s=5.0, window_s=14.0, truth=True, staggered=False
    ),
    "full64": Workload("full64", 64, 256, 0.0, 0.0, warmup_s=3.0, window_s=8.0, truth=False, continuous_usage=False),
    "paced1000": Workload("paced1000", 1000, 64, 50.0, 40.0, warmup_s=6.0, window_s=10.0, truth=True),
    "procs": Workload("procs", 128, 256, 0.0, 0.0, warmup_s=5.0, window_s=8.0, truth=False, continuous_usage=False),
    # paced64 on a generator that has about half a core: a busy process spins on the same core.
    "overload64": Workload("overload64", 64, 256, 50.0, 10.0, warmup_s=5.0, window_s=14.0, truth=True, spin=True),
}
# The clients: llmload with kernel receive stamps (its default), llmload with user-space stamps, and
# the asyncio reference.
CLIENTS = ("llmload", "llmload-user", "reference")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pinned(cmd: list[str], cores: str | None) -> list[str]:
    """Prefix ``cmd`` with ``taskset -c cores`` where taskset exists and cores are asked for."""
    return [TASKSET, "-c", cores, *cmd] if TASKSET and cores else cmd


def stop_process(proc: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """SIGTERM one process we started, wait, then SIGKILL it if needed."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class TruthServer:
    """The benchmark's server as a child process."""

    def __init__(self, workload: Workload, log: str | None, cores: str | None) -> None:
        cmd = [
            PY,
            str(ROOT / "benchmarks" / "_truth_server.py"),
            "--port",
            "0",
            "--ttft-ms",
            str(workload.ttft_ms),
            "--itl-ms",
            str(workload.itl_ms),
        ]
        if log:
            cmd += ["--log", log]
        if not workload.continuous_usage:
            cmd.append("--no-continuous-usage")
        self.log = log
        self.proc = subprocess.Popen(pinned(cmd, cores), stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            stop_process(self.proc)
            raise RuntimeError(f"truth server did not start: {line!r}")
        self.url = line.rsplit(" ", 1)[1].strip()

    def stats(self) -> dict:
        for attempt in range(3):  # a busy shared machine can delay an answer; do not fail the run for it
            try:
                with urllib.request.urlopen(f"{self.url}/stats", timeout=10) as resp:
                    return json.loads(resp.read())
            except OSError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def stop(self) -> dict | None:
        stop_process(self.proc)
        self.proc.stdout.close()
        if self.log and os.path.exists(self.log):
            with open(self.log, "rb") as handle:
                return json.loads(handle.read())
        return None


def tree_cpu_s(proc: psutil.Process) -> float:
    """User + system CPU seconds of ``proc`` and its live children."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def measure_window(client: subprocess.Popen, server: TruthServer, workload: Workload) -> dict:
    """Wait for tokens, warm up, then measure CPU and server-counted tokens over the window."""
    ps = psutil.Process(client.pid)
    deadline = time.monotonic() + 60
    while server.stats()["tokens"] == 0:
        if client.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the client produced no tokens")
        time.sleep(0.2)
    time.sleep(workload.warmup_s)
    s0, c0, t0 = server.stats(), tree_cpu_s(ps), time.monotonic()
    rss = []
    end = t0 + workload.window_s
    while time.monotonic() < end:
        time.sleep(min(1.0, max(0.0, end - time.monotonic())))
        rss.append(sum(p.memory_info().rss for p in [ps, *ps.children(recursive=True)]))
    s1, c1, t1 = server.stats(), tree_cpu_s(ps), time.monotonic()
    tokens = s1["tokens"] - s0["tokens"]
    cpu = c1 - c0
    return {
        "window": (t0, t1),
        "tokens": tokens,
        "tokens_per_s": tokens / (t1 - t0),
        "cpu_s": cpu,
        "cpu_share": cpu / (t1 - t0),
        "cpu_s_per_1m_tokens": cpu / tokens * 1e6 if tokens else float("nan"),
        "rss_mb": max(rss) / 2**20 if rss else None,
    }


class Spinner:
    """A process that spins on ``cores`` while a client runs there (the overloaded workloads)."""

    def __init__(self, cores: str | None, active: bool) -> None:
        self.proc = subprocess.Popen(pinned([PY, "-c", "while True: pass"], cores)) if active else None

    def __enter__(self) -> Spinner:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            stop_process(self.proc)


def run_llmload(
    workload: Workload,
    tmp: str,
    *,
    processes: int = 1,
    cores: str | None = "1",
    server_cores: str | None = "0",
    timestamps: str = "kernel",
) -> dict:
    """Run headless Locust with llmload against a fresh truth server."""
    tag = f"{workload.name}-{processes}-{timestamps}"
    log = os.path.join(tmp, f"truth-llmload-{tag}.json") if workload.truth else None
    server = TruthServer(workload, log, server_cores)
    times = os.path.join(tmp, f"times-llmload-{tag}")
    results = os.path.join(tmp, f"results-{tag}.json")
    run_time = int(workload.warmup_s + workload.window_s + 8)
    cmd = [
        *LOCUST,
        "-f",
        str(ROOT / "benchmarks" / "_locust_bench.py"),
        "--headless",
        "--only-summary",
        "-u",
        str(workload.streams),
        "-r",
        str(workload.streams),
        "-t",
        f"{run_time}s",
        "--host",
        server.url,
        "--llm-max-tokens",
        str(workload.max_tokens),
        "--llm-results",
        results,
        "--llm-timestamps",
        timestamps,
        "--stop-timeout",
        "0",
        "--loglevel",
        "WARNING",
    ]
    if processes > 1:
        # An own master port: the default (5557) may belong to another Locust run on this machine.
        port = str(free_port())
        cmd += [
            "--processes",
            str(processes),
            "--master-bind-host",
            "127.0.0.1",
            "--master-bind-port",
            port,
            "--master-port",
            port,
        ]
    env = dict(os.environ, LLMLOAD_BENCH_STAGGER_S=str(workload.stagger_s), LLMLOAD_BENCH_STREAMS=str(workload.streams))
    if workload.truth:
        env["LLMLOAD_BENCH_TIMES"] = times
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    out_path = os.path.join(tmp, f"locust-{tag}.out")
    with open(out_path, "wb") as out, Spinner(cores, workload.spin):
        client = subprocess.Popen(pinned(cmd, cores), stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            measured = measure_window(client, server, workload)
            client.wait(timeout=run_time + 60)
        except Exception as exc:
            with open(out_path, "rb") as handle:
                tail = handle.read()[-2000:].decode(errors="replace")
            raise RuntimeError(f"llmload run failed ({exc}); Locust output ends with:\n{tail}") from exc
        finally:
            stop_process(client)
            truth = server.stop()
    measured["exit_code"] = client.returncode
    with open(results, "rb") as handle:
        doc = json.loads(handle.read())
    measured["reported"] = {k: doc["total"][k] for k in ("ttft_s", "itl_s")}
    measured["generator"] = doc.get("generator")
    measured["requests"] = doc["total"]["requests"]
    if truth is not None:
        kept = []
        for name in os.listdir(tmp):
            if name.startswith(os.path.basename(times) + "."):
                with open(os.path.join(tmp, name), "rb") as handle:
                    kept += json.loads(handle.read())
                os.remove(os.path.join(tmp, name))
        measured["accuracy"] = accuracy(kept, truth, measured["window"])
    return measured


def run_soak(tmp: str, *, requests: int, max_s: float, cores: str | None, server_cores: str | None) -> dict:
    """Run llmload (one process) until the server has answered ``requests`` short requests; sample its RSS."""
    workload = Workload("soak", 64, 4, 0.0, 0.0, warmup_s=0.0, window_s=max_s, truth=False, continuous_usage=False)
    server = TruthServer(workload, None, server_cores)
    results = os.path.join(tmp, "results-soak.json")
    cmd = [
        *LOCUST,
        "-f",
        str(ROOT / "benchmarks" / "_locust_bench.py"),
        "--headless",
        "--only-summary",
        "-u",
        "64",
        "-r",
        "64",
        "-t",
        f"{int(max_s) + 30}s",
        "--host",
        server.url,
        "--llm-max-tokens",
        "4",
        "--llm-results",
        results,
        "--stop-timeout",
        "0",
        "--loglevel",
        "WARNING",
    ]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    samples = []  # (seconds, requests answered, RSS MiB)
    with open(os.path.join(tmp, "locust-soak.out"), "wb") as out:
        client = subprocess.Popen(pinned(cmd, cores), stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            ps = psutil.Process(client.pid)
            start = time.monotonic()
            while time.monotonic() - start < max_s and client.poll() is None:
                time.sleep(5)
                done = server.stats()["requests"]
                samples.append((round(time.monotonic() - start, 1), done, round(ps.memory_info().rss / 2**20, 1)))
                print(f"  soak: {samples[-1][0]:6.0f} s  {done:>9,} requests  RSS {samples[-1][2]:.1f} MiB", flush=True)
                if done >= requests:
                    break
            client.send_signal(signal.SIGTERM)  # Locust quits cleanly and writes the results
            client.wait(timeout=120)
        finally:
            stop_process(client)
            server.stop()
    with open(results, "rb") as handle:
        doc = json.loads(handle.read())
    after_warmup = [s for s in samples if s[1] >= min(50_000, requests // 10)] or samples
    return {
        "samples": samples,
        "requests_ok": doc["total"]["requests"]["ok"],
        "rss_mib_first": after_warmup[0][2],
        "rss_mib_last": samples[-1][2],
        "rss_mib_max": max(s[2] for s in samples),
        "generator": doc.get("generator"),
    }


def run_reference(workload: Workload, tmp: str, *, cores: str | None = "1", server_cores: str | None = "0") -> dict:
    """Run the asyncio reference client against a fresh truth server."""
    log = os.path.join(tmp, f"truth-ref-{workload.name}.json") if workload.truth else None
    server = TruthServer(workload, log, server_cores)
    out = os.path.join(tmp, f"ref-{workload.name}.json")
    seconds = workload.warmup_s + workload.window_s + 6
    cmd = [
        PY,
        str(ROOT / "benchmarks" / "_ref_client.py"),
        "--url",
        server.url,
        "--streams",
        str(workload.streams),
        "--seconds",
        str(seconds),
        "--max-tokens",
        str(workload.max_tokens),
        "--out",
        out,
        "--stagger-s",
        str(workload.stagger_s),
    ]
    with Spinner(cores, workload.spin):
        client = subprocess.Popen(pinned(cmd, cores))
        try:
            measured = measure_window(client, server, workload)
            client.wait(timeout=seconds + 120)
        finally:
            stop_process(client)
            truth = server.stop()
    with open(out, "rb") as handle:
        doc = json.loads(handle.read())
    measured["requests"] = {"ok": doc["ok"], "failed": doc["failed"]}
    if truth is not None:
        measured["accuracy"] = accuracy(doc["requests"], truth, measured["window"])
    return measured


def _dist(values) -> Distribution:
    dist = Distribution(scale=1e6, highest=3_600_000_000)
    for v in values:
        dist.record(max(v, 0.0))
    return dist


def accuracy(kept: list, truth: dict, window: tuple[float, float]) -> dict:
    """Match client requests sent inside ``window`` to the server's log and compare TTFT and ITL."""
    log = truth["requests"]
    c_ttft, t_ttft, c_itl, t_itl, ttft_err, itl_err, send_lag, first_lag = [], [], [], [], [], [], [], []
    matched = 0
    for key, t_send, token_times in kept:
        if not (window[0] <= t_send <= window[1]) or not token_times:
            continue
        entry = log.get(key)
        if entry is None:
            continue
        t_recv, writes = entry
        true_times = []
        for i in range(0, len(writes), 2):
            true_times += [writes[i]] * int(writes[i + 1])
        if len(true_times) != len(token_times):
            continue
        matched += 1
        ct, tt = token_times[0] - t_send, true_times[0] - t_recv
        c_ttft.append(ct)
        t_ttft.append(tt)
        ttft_err.append(ct - tt)
        send_lag.append(t_recv - t_send)
        first_lag.append(token_times[0] - true_times[0])
        for i in range(1, len(token_times)):
            cg, tg = token_times[i] - token_times[i - 1], true_times[i] - true_times[i - 1]
            c_itl.append(cg)
            t_itl.append(tg)
            itl_err.append(cg - tg)
    if not matched:
        return {"matched": 0}
    dists = {
        name: _dist(values)
        for name, values in (("c_ttft", c_ttft), ("t_ttft", t_ttft), ("c_itl", c_itl), ("t_itl", t_itl))
    }
    for values in (ttft_err, itl_err, send_lag, first_lag):
        values.sort()

    def q(values: list[float], p: float) -> float:
        return values[min(len(values) - 1, int(p / 100 * len(values)))]

    out = {"matched": matched}
    for metric in ("ttft", "itl"):
        for p in (50, 99):
            client_v, true_v = dists[f"c_{metric}"].percentile(p), dists[f"t_{metric}"].percentile(p)
            out[f"{metric}_p{p}"] = {"client": client_v, "true": true_v, "diff": client_v - true_v}
    out["ttft_err"] = {"p50": q(ttft_err, 50), "p99": q(ttft_err, 99), "max": ttft_err[-1]}
    out["itl_err"] = {"p50": q(itl_err, 50), "p99": q(itl_err, 99)}
    # TTFT error = request delay (client t_send to server receipt) + first-token delay (write to stamp).
    out["request_delay"] = {"p50": q(send_lag, 50), "p99": q(send_lag, 99), "max": send_lag[-1]}
    out["first_token_delay"] = {"p50": q(first_lag, 50), "p99": q(first_lag, 99), "max": first_lag[-1]}
    return out


def fmt_ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1e3:.2f}"


def print_side_by_side(name: str, runs: dict[str, dict]) -> None:
    """Print one workload's figures, one column per client, with CPU ratios to the reference."""
    labels = list(runs)
    print(f"\n== {name} ==")
    print(f"{'':34}" + "".join(f"{label:>16}" for label in labels))

    def row(title: str, cell) -> None:  # noqa: ANN001
        print(f"{title:34}" + "".join(f"{cell(runs[label]):>16}" for label in labels))

    row("CPU-s per 1M tokens", lambda r: f"{r['cpu_s_per_1m_tokens']:.1f}")
    reference = runs.get("reference")
    if reference:
        row(
            "CPU ratio to the reference", lambda r: f"{r['cpu_s_per_1m_tokens'] / reference['cpu_s_per_1m_tokens']:.2f}"
        )
    kernel, user = runs.get("llmload"), runs.get("llmload-user")
    if kernel and user:
        ratio = kernel["cpu_s_per_1m_tokens"] / user["cpu_s_per_1m_tokens"]
        print(f"{'CPU kernel stamps / user-space':34}{ratio:16.2f}")
    row("client CPU share of a core", lambda r: f"{r['cpu_share']:.0%}")
    row("tokens/s (server-counted)", lambda r: f"{r['tokens_per_s']:,.0f}")
    if all(r.get("accuracy", {}).get("matched") for r in runs.values()):
        row("matched requests", lambda r: str(r["accuracy"]["matched"]))
        for metric in ("ttft", "itl"):
            for p in (50, 99):
                key = f"{metric}_p{p}"
                row(f"{metric.upper()} p{p} client - true (ms)", lambda r, key=key: fmt_ms(r["accuracy"][key]["diff"]))
        row(
            "TTFT p50/p99 true (ms)",
            lambda r: f"{fmt_ms(r['accuracy']['ttft_p50']['true'])}/{fmt_ms(r['accuracy']['ttft_p99']['true'])}",
        )
        row(
            "TTFT error per request p50/p99",
            lambda r: f"{fmt_ms(r['accuracy']['ttft_err']['p50'])}/{fmt_ms(r['accuracy']['ttft_err']['p99'])}",
        )
        row(
            "ITL error per gap p50/p99",
            lambda r: f"{fmt_ms(r['accuracy']['itl_err']['p50'])}/{fmt_ms(r['accuracy']['itl_err']['p99'])}",
        )
        # TTFT error = request delay (client t_send to the server's receipt, which includes the
        # server's own lateness in reading it) + first-token delay (server write to client stamp).
        row(
            "  request delay p50/p99",
            lambda r: (
                f"{fmt_ms(r['accuracy']['request_delay']['p50'])}/{fmt_ms(r['accuracy']['request_delay']['p99'])}"
            ),
        )
        row(
            "  first-token delay p50/p99",
            lambda r: (
                f"{fmt_ms(r['accuracy']['first_token_delay']['p50'])}/"
                f"{fmt_ms(r['accuracy']['first_token_delay']['p99'])}"
            ),
        )
    for label in labels:
        g = runs[label].get("generator")
        if g:
            late = g.get("read_lateness_s") or {}
            lateness = ""
            if late.get("count"):
                p50, p99, top = (fmt_ms(late.get(k)) for k in ("p50", "p99", "max"))
                lateness = f" read lateness p50/p99/max {p50}/{p99}/{top} ms"
            print(f"{label} self-check: clock={g.get('clock')} trustworthy={g.get('trustworthy')}{lateness}")
            print(f"  reasons={g.get('reasons')} notes={g.get('notes')}")


def main() -> int:
    parser = argparse.ArgumentParser(description="llmload vs a minimal asyncio client, side by side")
    parser.add_argument("--only", nargs="*", choices=list(WORKLOADS), default=list(WORKLOADS))
    parser.add_argument("--clients", nargs="*", choices=CLIENTS, default=list(CLIENTS))
    parser.add_argument("--json", default=None, help="also write every figure here")
    parser.add_argument(
        "--soak",
        type=int,
        default=0,
        metavar="N",
        help="also run llmload until the server answered N short requests, sampling its RSS",
    )
    parser.add_argument("--soak-max-s", type=float, default=600.0, help="time limit of --soak")
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and client to cores")
    args = parser.parse_args()
    if "reference" in args.clients and importlib.util.find_spec("aiohttp") is None:
        print(
            "client_bench: the reference client needs aiohttp: pip install -e '.[bench]' "
            "(or run only llmload with --clients llmload)",
            file=sys.stderr,
        )
        return 2
    cores, server_cores = (None, None) if args.no_pin else ("1", "0")
    load = os.getloadavg()
    print(
        f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
        f"pinning: {'server core 0, client core 1' if TASKSET and not args.no_pin else 'none'}"
    )
    report: dict = {"load_before": load}
    with tempfile.TemporaryDirectory(prefix="llmload-bench-") as tmp:
        for name in args.only:
            workload = WORKLOADS[name]
            if name == "procs":
                one = run_llmload(workload, tmp, processes=1, cores=None, server_cores=None)
                two = run_llmload(workload, tmp, processes=2, cores=None, server_cores=None)
                report[name] = {"processes_1": one, "processes_2": two}
                print(f"\n== procs (llmload, full speed, {workload.streams} streams, unpinned) ==")
                for label, r in (("--processes 1", one), ("--processes 2", two)):
                    print(
                        f"{label:34}{r['tokens_per_s']:14,.0f} tokens/s  CPU {r['cpu_share']:.0%} of a core  "
                        f"{r['cpu_s_per_1m_tokens']:.1f} CPU-s/1M"
                    )
                print(f"{'speed-up':34}{two['tokens_per_s'] / one['tokens_per_s']:14.2f}x")
                continue
            runs: dict[str, dict] = {}
            for client in args.clients:
                if client == "reference":
                    runs[client] = run_reference(workload, tmp, cores=cores, server_cores=server_cores)
                else:
                    stamps = "user" if client == "llmload-user" else "kernel"
                    runs[client] = run_llmload(workload, tmp, cores=cores, server_cores=server_cores, timestamps=stamps)
            report[name] = runs
            print_side_by_side(
                f"{name}: {workload.streams} streams, {workload.max_tokens} tokens, TTFT {workload.ttft_ms:g} ms, "
                f"ITL {workload.itl_ms:g} ms{', staggered' if workload.staggered else ', in lock-step'}"
                f"{', a process spinning on the client core' if workload.spin else ''}",
                runs,
            )
        if args.soak:
            print(f"\n== soak: llmload, 64 streams at full speed, 4-token answers, until {args.soak:,} requests ==")
            soak = run_soak(tmp, requests=args.soak, max_s=args.soak_max_s, cores=cores, server_cores=server_cores)
            report["soak"] = soak
            print(
                f"requests ok {soak['requests_ok']:,}; RSS after warm-up {soak['rss_mib_first']:.1f} MiB, "
                f"at the end {soak['rss_mib_last']:.1f} MiB, max {soak['rss_mib_max']:.1f} MiB"
            )
    load = os.getloadavg()
    report["load_after"] = load
    print(f"\nload average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
