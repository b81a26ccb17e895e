"""Every scenario file runs against the simulator; backends labelling; multi-turn context.

Scenarios run as ``locust --config scenarios/NAME.conf`` from the repository
root with a shortened run (``-u``, ``-t`` and the capacity settings overridden
on the command line), all at once against one ``fixed`` simulator. The
two-backend run checks every request's label against two simulators' own
token counters; the multi-turn run checks, against a scripted server, that
each turn sends the answers the server really gave.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import orjson
import pytest

from llmload.simulator.process import SimulatorProcess
from tests.support.chunks import DONE, chat_chunk, usage_chunk
from tests.support.processes import ROOT, env, run_locust, scrape
from tests.support.scripted_server import ScriptedServer, plain_response, sse_response

pytestmark = pytest.mark.integration

SCENARIOS = sorted(p.stem for p in (ROOT / "scenarios").glob("*.conf"))
SHORT = ["-u", "4", "-r", "4", "-t", "6s", "--stop-timeout", "5"]
OVERRIDES = {
    "gke-input-heavy": ["-u", "20", "-r", "20", "-t", "6s", "--stop-timeout", "5"],
    "gke-output-heavy": ["-u", "20", "-r", "20", "-t", "6s", "--stop-timeout", "5"],
    "soak": [*SHORT, "--llm-prometheus-port", "0", "--llm-prometheus-grace", "0"],
    "bursty-soak": [*SHORT, "--llm-prometheus-port", "0", "--llm-prometheus-grace", "0"],
    "trace-replay": [*SHORT, "--llm-trace-max-requests", "40"],
    "capacity": [
        "--stop-timeout",
        "5",
        "--llm-capacity-start",
        "2",
        "--llm-capacity-max",
        "4",
        "--llm-capacity-warmup",
        "0.5",
        "--llm-capacity-hold",
        "1",
    ],
}


def test_the_expected_scenarios_exist():
    assert SCENARIOS == [
        "agent-tools",
        "backprop-long-context",
        "backprop-rtx3090",
        "bursty-soak",
        "capacity",
        "embeddings",
        "gke-input-heavy",
        "gke-output-heavy",
        "mixed",
        "multi-turn-chat",
        "reasoning-chat",
        "reranker",
        "soak",
        "summarization",
        "trace-replay",
        "vision-chat",
    ]
    for name in SCENARIOS:
        text = (ROOT / "scenarios" / f"{name}.conf").read_text()
        assert text.startswith("# "), f"{name}: starts with a comment saying what it models"
        assert "locustfile = locustfiles/" in text


def test_every_scenario_runs_against_the_simulator(tmp_path):
    procs = {}
    with SimulatorProcess(profile="fixed", extra_args=["--ttft-ms", "10", "--itl-ms", "1"]) as sim:
        # Three at a time: Locust arms --run-time on gevent's cached clock, so a start-up slowed
        # down by many processes starting at once on two cores eats into (or all of) a short run.
        for batch in (SCENARIOS[i : i + 3] for i in range(0, len(SCENARIOS), 3)):
            running = []
            for name in batch:
                out = tmp_path / name
                out.mkdir()
                cmd = [
                    sys.executable,
                    "-m",
                    "locust",
                    "--config",
                    f"scenarios/{name}.conf",
                    "--host",
                    sim.base_url,
                    "--llm-results",
                    str(out / "results.json"),
                    *OVERRIDES.get(name, SHORT),
                ]
                with open(out / "log.txt", "w") as log:
                    procs[name] = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env())
                running.append(procs[name])
            try:
                for proc in running:
                    proc.wait(timeout=120)
            finally:
                for proc in running:
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
    docs, failures = {}, []
    for name, proc in procs.items():
        output = (tmp_path / name / "log.txt").read_text()
        results = tmp_path / name / "results.json"
        if proc.returncode != 0 or not results.exists():
            failures.append(f"{name}: exit {proc.returncode}\n{output[-3000:]}")
            continue
        docs[name] = json.loads(results.read_text())
        assert "Traceback" not in output, name
        assert docs[name]["total"]["requests"]["ok"] > 0, name
    assert not failures, "\n\n".join(failures)

    def per_request(doc, key):
        total = doc["total"]
        return total["tokens"][key] / total["requests"]["ok"]

    study = docs["backprop-rtx3090"]
    assert study["run"]["options"]["think_time"] == 0 and study["run"]["options"]["max_tokens"] == 100
    assert per_request(study, "output") == 100
    # Chat prompts: 26 template tokens + 5 per message + the question (simulator's tokenizer).
    assert 31 + 5 <= per_request(study, "prompt") <= 31 + 14
    assert 31 + 200 <= per_request(docs["backprop-long-context"], "prompt") <= 31 + 330
    for name in ("gke-input-heavy", "gke-output-heavy"):
        doc = docs[name]
        assert doc["arrivals"]["mode"] == "poisson" and doc["arrivals"]["sent"] > 0
        assert doc["total"]["dispatch_lag_s"]["count"] > 0
        assert doc["run"]["options"]["ignore_eos"] is True
    assert per_request(docs["gke-input-heavy"], "prompt") > per_request(docs["gke-output-heavy"], "prompt")
    assert per_request(docs["gke-output-heavy"], "output") > per_request(docs["gke-input-heavy"], "output")
    assert per_request(docs["gke-output-heavy"], "output") <= 256
    assert 900 <= per_request(docs["summarization"], "prompt") <= 4400
    assert {g["user_class"] for g in docs["mixed"]["groups"]} == {"Chatbot", "Summarization"}
    multi = docs["multi-turn-chat"]
    assert multi["groups"][0]["user_class"] == "MultiTurnChat" and multi["run"]["options"]["turns"] == "2-6"
    assert "Prometheus metrics at http://127.0.0.1:" in (tmp_path / "soak" / "log.txt").read_text()
    assert docs["soak"]["server"]
    cap = docs["capacity"]["capacity"]
    assert [s["level"] for s in cap["steps"]] == [2, 4] and cap["answer"]["users"] == 4
    assert cap["slo"] == {"stream_rate_tps": 10.0, "ttft_s": 2.0, "attainment": 0.95}


def test_two_backends_label_every_request(tmp_path):
    secret = "sk-beta-SECRET-1234"
    with (
        SimulatorProcess(profile="fixed", extra_args=["--ttft-ms", "20", "--itl-ms", "5"]) as alpha,
        SimulatorProcess(profile="fixed", extra_args=["--ttft-ms", "20", "--itl-ms", "5"]) as beta,
    ):
        backends = tmp_path / "backends.toml"
        backends.write_text(
            f'[[backend]]\nname = "alpha"\nbase_url = "{alpha.base_url}"\ngpu = "GPU A"\nprice_per_hour = 1.5\n\n'
            f'[[backend]]\nname = "beta"\nbase_url = "{beta.base_url}"\ngpu = "GPU B"\nprice_per_hour = 3.0\n'
            'api_key_env = "BETA_API_KEY"\nweight = 3\n'
        )
        before = {name: scrape(s.base_url) for name, s in (("alpha", alpha), ("beta", beta))}
        os.environ["BETA_API_KEY"] = secret
        try:
            run = run_locust(
                tmp_path,
                str(ROOT / "locustfiles" / "chatbot.py"),
                "",
                "-u",
                "8",
                "-r",
                "8",
                "-t",
                "4s",
                "--stop-timeout",
                "10",
                "--llm-backends",
                str(backends),
                "--llm-think-time",
                "0",
                "--llm-max-tokens",
                "10",
                "--loglevel",
                "DEBUG",
            )
        finally:
            del os.environ["BETA_API_KEY"]
        after = {name: scrape(s.base_url) for name, s in (("alpha", alpha), ("beta", beta))}
    assert run.returncode == 0, run.output[-3000:]
    groups = {g["backend"]: g for g in run.results["groups"]}
    assert set(groups) == {"alpha", "beta"}
    for name, group in groups.items():
        generated = after[name]["vllm:generation_tokens_total"] - before[name]["vllm:generation_tokens_total"]
        prompted = after[name]["vllm:prompt_tokens_total"] - before[name]["vllm:prompt_tokens_total"]
        assert group["tokens"]["output"] == generated > 0, name
        assert group["tokens"]["prompt"] == prompted, name
    # Weights 1:3 over 8 users: 2 alpha users, 6 beta users, all closed loop at the same speed.
    ratio = groups["beta"]["requests"]["ok"] / groups["alpha"]["requests"]["ok"]
    assert ratio == pytest.approx(3.0, rel=0.2)
    recorded = {b["name"]: b for b in run.results["run"]["backends"]}
    assert recorded["beta"]["api_key_set"] is True and recorded["beta"]["price_per_hour"] == 3.0
    assert secret not in run.output and secret not in (tmp_path / "results.json").read_text()


def _reply(n: int) -> list:
    events = [
        chat_chunk("", role="assistant"),
        chat_chunk("reply"),
        chat_chunk(f"-{n}", finish="stop"),
        usage_chunk(10, 2),
        DONE,
    ]
    return sse_response(events)


def test_multi_turn_session_sends_the_previous_answers(tmp_path):
    def script(n: int, request: bytes) -> list:
        if not request.startswith(b"POST"):
            return plain_response("404 Not Found", b"{}")
        return _reply(n)

    with ScriptedServer(script) as server:
        run = run_locust(
            tmp_path,
            "multi_turn.py",
            server.base_url,
            "-u",
            "1",
            "-r",
            "1",
            "-t",
            "3s",
            "--stop-timeout",
            "5",
            "--llm-model",
            "m",
            "--llm-turns",
            "3",
            "--llm-think-time",
            "0",
            "--llm-max-tokens",
            "5",
        )
        requests = list(server.requests)
    assert run.returncode == 0, run.output[-3000:]
    posts = [(n, orjson.loads(r.split(b"\r\n\r\n", 1)[1])) for n, r in enumerate(requests) if r.startswith(b"POST")]
    assert len(posts) >= 9
    lengths = [len(body["messages"]) for _, body in posts]
    assert lengths[:9] == [1, 3, 5] * 3  # three turns per session: 1 message, then +2 per turn
    for (prev_n, prev), (_, body) in zip(posts, posts[1:], strict=False):
        messages = body["messages"]
        if len(messages) == 1:
            continue  # a new session
        # The whole previous request, the server's real answer to it, then the new question.
        assert messages[:-1] == prev["messages"] + [{"role": "assistant", "content": f"reply-{prev_n}"}]
        assert messages[-1]["role"] == "user"
    assert run.results["groups"][0]["user_class"] == "MultiTurnChat"
