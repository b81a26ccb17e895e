"""The rendered Kubernetes soak run, played by local processes (deploy/, docs/kubernetes.md).

No cluster is needed: the master's and the workers' container command, args and
env are taken from the YAML that ``deploy/render.py`` renders, the ConfigMap's
keys are written where its mountPath says, the results claim is a directory,
the vLLM Service is the simulator, and the API key comes from a fake Secret
through each container's ``secretKeyRef``. Only what a cluster changes is
rewritten: the mount paths, the Service's DNS name (127.0.0.1), and the ports
(free ones, rewritten consistently in every place they appear).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import pytest

from llmload.simulator.process import SimulatorProcess
from tests.support.processes import free_port, scrape

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SECRET_VALUE = "sk-test-4f1c9b2e-never-print-me"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"deploy_{name}", ROOT / "deploy" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


render = _load("render")
check = _load("check")


def _container(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]["containers"][0]


def _env(container: dict, secrets: dict[tuple[str, str], str]) -> dict[str, str]:
    out = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    out["PYTHONPATH"] = str(ROOT)
    for entry in container.get("env", []):
        if "value" in entry:
            out[entry["name"]] = entry["value"]
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            out[entry["name"]] = secrets[(ref["name"], ref["key"])]
    return out


def _rewrite(args: list[str], paths: dict[str, Path], values: dict[str, str], options: dict[str, str]) -> list[str]:
    out = []
    for i, arg in enumerate(args):
        option = args[i - 1] if i else ""
        if option in options:
            arg = options[option]
        for prefix, local in paths.items():
            if arg.startswith(prefix + "/"):
                arg = str(local / arg[len(prefix) + 1 :])
        out.append(values.get(arg, arg) if option in ("--master-bind-port", "--llm-prometheus-port") else arg)
    return out


def test_rendered_soak_runs_as_master_and_three_workers(tmp_path):
    values = copy.deepcopy(render.load_values())
    values["workers"] = 3
    values["run"].update(
        users=9,
        spawn_rate=9,
        run_time="8s",
        stop_timeout=10,
        extra_args=["--llm-think-time", "0", "--llm-max-tokens", "20", "--llm-ignore-eos", "--llm-server-metrics"]
        + ["--llm-prometheus-grace", "3"],
    )
    rendered = render.render(values, "soak", "gmp", gke=False)
    assert check.problems(rendered.objects + rendered.after) == []
    by_kind = {(o["kind"], o["metadata"]["name"]): o for o in rendered.objects}
    names = render.names(values)
    master, worker = by_kind[("Job", names["master"])], by_kind[("Job", names["worker"])]
    config = by_kind[("ConfigMap", names["config"])]
    assert worker["spec"]["parallelism"] == worker["spec"]["completions"] == 3
    rendered_text = render.dump(rendered.objects + rendered.after)
    assert SECRET_VALUE not in rendered_text

    m_container, w_container = _container(master), _container(worker)
    exporter_port, master_port = str(values["ports"]["exporter"]), str(values["ports"]["master"])
    assert m_container["args"][m_container["args"].index("--llm-prometheus-port") + 1] == exporter_port
    assert w_container["args"][w_container["args"].index("--master-port") + 1] == master_port

    secret = values["secret"]
    secrets = {(secret["name"], secret["key"]): SECRET_VALUE}
    local_master, local_exporter = str(free_port()), str(free_port())

    with SimulatorProcess(profile="fixed", extra_args=["--ttft-ms", "50", "--itl-ms", "10"]) as sim:
        # The ConfigMap's keys where its mountPath says; the vLLM Service's name becomes the simulator.
        mount = m_container["volumeMounts"]
        config_dir, results_dir = tmp_path / "config", tmp_path / "results"
        config_dir.mkdir()
        results_dir.mkdir()
        for key, text in config["data"].items():
            if key == render.BACKENDS_FILE:
                text = text.replace(values["backend"][0]["base_url"], sim.base_url)
            (config_dir / key).write_text(text)
        paths = {
            next(m["mountPath"] for m in mount if m["name"] == "config"): config_dir,
            next(m["mountPath"] for m in mount if m["name"] == "results"): results_dir,
        }
        ports = {master_port: local_master, exporter_port: local_exporter}
        master_cmd = [sys.executable, "-m", "locust"] + _rewrite(m_container["args"], paths, ports, {})
        worker_cmd = [sys.executable, "-m", "locust"] + _rewrite(
            w_container["args"], paths, ports, {"--master-host": "127.0.0.1", "--master-port": local_master}
        )
        assert m_container["command"] == w_container["command"] == ["locust"]
        before = scrape(sim.base_url)
        procs, logs = [], []
        try:
            for i, (cmd, container) in enumerate([(master_cmd, m_container)] + [(worker_cmd, w_container)] * 3):
                log = tmp_path / ("master.log" if i == 0 else f"worker{i}.log")
                logs.append(log)
                with open(log, "w") as handle:
                    procs.append(
                        subprocess.Popen(
                            cmd, cwd=tmp_path, stdout=handle, stderr=subprocess.STDOUT, env=_env(container, secrets)
                        )
                    )
            exporter_seen = None
            deadline = time.monotonic() + 90
            while procs[0].poll() is None and time.monotonic() < deadline:
                if exporter_seen is None:
                    try:
                        exporter_seen = scrape(f"http://127.0.0.1:{local_exporter}")
                    except (urllib.error.URLError, ConnectionError, OSError):
                        pass
                time.sleep(0.5)
            master_rc = procs[0].wait(timeout=max(deadline - time.monotonic(), 1))
            worker_rcs = [p.wait(timeout=30) for p in procs[1:]]
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()
                    proc.wait(timeout=10)
        after = scrape(sim.base_url)

    master_log = logs[0].read_text()
    assert master_rc == 0, master_log[-3000:]
    assert worker_rcs == [0, 0, 0], [log.read_text()[-1500:] for log in logs[1:]]
    assert exporter_seen is not None, "the exporter never answered on the rendered (rewritten) port"
    assert any(name.startswith("llmload_") for name in exporter_seen)

    doc = json.loads((results_dir / "results.json").read_text())
    assert (results_dir / "report.html").exists()
    assert doc["run"]["workers"] == 3
    total = doc["total"]
    generated = after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"]
    prompt = after["vllm:prompt_tokens_total"] - before["vllm:prompt_tokens_total"]
    ok = total["requests"]["ok"]
    assert ok > 50 and total["requests"]["failed"] == 0
    assert total["tokens"]["output"] == generated == 20 * ok
    assert total["tokens"]["prompt"] == prompt
    assert doc["run"]["backends"][0]["api_key_set"] is True  # the key reached the master through the env
    assert "workers_to_add" in doc["generator"]

    for text in [rendered_text, *(log.read_text() for log in logs), (results_dir / "results.json").read_text()]:
        assert SECRET_VALUE not in text
    assert SECRET_VALUE not in (results_dir / "report.html").read_text()
    assert all(SECRET_VALUE not in arg for arg in master_cmd + worker_cmd)
