"""deploy/: every rendered variant is valid Kubernetes, consistent, and made from the checkout's files.

Core objects are validated against the Kubernetes OpenAPI schemas of a pinned
version (``kubernetes-validate``, strict: unknown fields fail); monitoring
objects against the CRD schemas vendored in ``deploy/schemas/`` (with
``additionalProperties: false`` added wherever the CRD lists properties, as the
API server's strict field validation rejects unknown fields).
"""

from __future__ import annotations

import copy
import importlib.util
import itertools
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.35.0"
CRD_SCHEMAS = {
    ("monitoring.googleapis.com/v1", "PodMonitoring"): "podmonitoring.json",
    ("monitoring.googleapis.com/v1", "Rules"): "rules.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule.json",
}
COMBINATIONS = list(itertools.product(("soak", "webui"), ("none", "gmp", "operator"), (False, True)))


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"deploy_{name}", ROOT / "deploy" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


render = _load("render")
check = _load("check")


def _strict(schema):
    if isinstance(schema, dict):
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        for value in schema.values():
            _strict(value)
    elif isinstance(schema, list):
        for value in schema:
            _strict(value)
    return schema


@pytest.fixture(scope="module")
def crd_validators():
    # OpenAPI v3 schemas are a draft-4 dialect; the CRDs' Go regexes ((?i) mid-pattern) are not
    # Python's, so the schemas themselves are not meta-checked, only used.
    return {
        key: jsonschema.Draft4Validator(_strict(json.loads((ROOT / "deploy" / "schemas" / name).read_text())))
        for key, name in CRD_SCHEMAS.items()
    }


@pytest.fixture(scope="module")
def values():
    return render.load_values()


def _all(rendered):
    return rendered.objects + rendered.after


def _find(objects, kind, name=None):
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert found, (kind, name)
    return found[0]


def _args(obj):
    return obj["spec"]["template"]["spec"]["containers"][0]["args"]


def _opt(args, name):
    return args[args.index(name) + 1]


@pytest.mark.parametrize(("variant", "mon", "gke"), COMBINATIONS)
def test_every_variant_is_valid_and_consistent(values, crd_validators, variant, mon, gke):
    rendered = render.render(values, variant, mon, gke)
    kinds = set()
    for obj in _all(rendered):
        kinds.add(obj["kind"])
        key = (obj["apiVersion"], obj["kind"])
        if key in crd_validators:
            crd_validators[key].validate(obj)
        else:
            assert obj["apiVersion"] in ("v1", "apps/v1", "batch/v1"), obj["apiVersion"]
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    assert check.problems(_all(rendered)) == []
    assert "Secret" not in kinds
    workload = "Job" if variant == "soak" else "Deployment"
    n = render.names(values)
    master, worker = _find(rendered.objects, workload, n["master"]), _find(rendered.objects, workload, n["worker"])
    count = worker["spec"]["parallelism"] if variant == "soak" else worker["spec"]["replicas"]
    assert int(_opt(_args(master), "--expect-workers")) == count == values["workers"]
    args = _args(master)
    assert _opt(args, "--master-bind-host") == _opt(args, "--llm-prometheus-host") == "0.0.0.0"
    if variant == "webui":
        assert _opt(args, "--web-host") == "0.0.0.0" and "--headless" not in args
    else:
        assert master["spec"]["backoffLimit"] == 0
        assert master["spec"]["template"]["spec"]["restartPolicy"] == "Never"
        assert worker["spec"]["completions"] == worker["spec"]["parallelism"]
        assert _find(rendered.after, "Pod")["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == n["results"]
    if mon != "none":
        assert {"Rules", "PodMonitoring"} <= kinds if mon == "gmp" else {"PrometheusRule", "ServiceMonitor"} <= kinds
    if gke:
        assert (
            sum(1 for o in rendered.objects if o["kind"] == "Deployment" and o["metadata"]["name"].startswith("vllm-"))
            == 3
        )


def test_workers_is_the_one_scale_knob(values):
    for workers in (1, 7, 32):
        changed = copy.deepcopy(values)
        changed["workers"] = workers
        for variant in ("soak", "webui"):
            objects = _all(render.render(changed, variant))
            assert check.problems(objects) == []
            assert _opt(
                _args(_find(objects, "Job" if variant == "soak" else "Deployment", "llmload-master")),
                "--expect-workers",
            ) == str(workers)


def test_api_key_only_through_secret_references(values):
    rendered = render.render(values, "soak", "gmp", gke=True)
    objects = _all(rendered)
    text = render.dump(objects)
    assert "--llm-api-key" not in text and "kind: Secret\n" not in text
    for obj in objects:
        spec = obj.get("spec", {}).get("template", {}).get("spec") or (obj["spec"] if obj["kind"] == "Pod" else None)
        for container in (spec or {}).get("containers", []):
            for env in container.get("env", []):
                if any(word in env["name"] for word in ("KEY", "TOKEN")):
                    assert "value" not in env and "secretKeyRef" in env["valueFrom"], env
    # every process that reads a key gets it: LLMLOAD_API_KEY and each backend's api_key_env
    config = _find(objects, "ConfigMap", "llmload-config")
    backends = tomllib.loads(config["data"]["backends.toml"])["backend"]
    for name in ("llmload-master", "llmload-worker"):
        env = {e["name"] for e in _find(objects, "Job", name)["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert "LLMLOAD_API_KEY" in env and {b["api_key_env"] for b in backends} <= env
    # the Hugging Face token of Google's vLLM samples
    vllm = _find(objects, "Deployment", "vllm-l4")["spec"]["template"]["spec"]["containers"][0]
    hf = next(e for e in vllm["env"] if e["name"] == "HUGGING_FACE_HUB_TOKEN")
    assert hf["valueFrom"]["secretKeyRef"] == {"name": "hf-secret", "key": "hf_api_token", "optional": True}


def test_gke_overlay_lists_each_gpu_backend_with_its_price(values):
    objects = render.render(values, "webui", "none", gke=True).objects
    backends = tomllib.loads(_find(objects, "ConfigMap", "llmload-config")["data"]["backends.toml"])["backend"]
    accelerators = {}
    for gpu in values["gke"]["gpu"]:
        deployment = _find(objects, "Deployment", f"vllm-{gpu['name']}")
        pod = deployment["spec"]["template"]["spec"]
        accelerators[gpu["name"]] = pod["nodeSelector"]["cloud.google.com/gke-accelerator"]
        assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == str(gpu["gpus"])
        service = _find(objects, "Service", f"vllm-{gpu['name']}")
        backend = next(b for b in backends if b["name"] == gpu["name"])
        assert backend["base_url"].startswith(f"http://{service['metadata']['name']}.")
        assert backend["price_per_hour"] == gpu["price_per_hour"]
    assert accelerators == {"l4": "nvidia-l4", "a100-40gb": "nvidia-tesla-a100", "h100-80gb": "nvidia-h100-80gb"}


def test_monitoring_objects_come_from_dashboards_files(values):
    gmp = render.render(values, "soak", "gmp").objects
    operator = render.render(values, "soak", "operator").objects
    dashboards = _find(gmp, "ConfigMap", "llmload-dashboards")
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    files = sorted((ROOT / "dashboards").glob("*.json"))
    assert files and dashboards["data"] == {p.name: p.read_text() for p in files}
    rules = yaml.safe_load((ROOT / values["monitoring"]["rules"]).read_text())["groups"]
    assert _find(gmp, "Rules")["spec"]["groups"] == rules == _find(operator, "PrometheusRule")["spec"]["groups"]
    assert _find(gmp, "PodMonitoring")["spec"]["endpoints"][0]["port"] == "metrics"
    service = _find(operator, "Service", "llmload-master")
    assert {"name": "metrics", "port": values["ports"]["exporter"], "targetPort": "metrics"} in service["spec"]["ports"]
    assert _find(operator, "ServiceMonitor")["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]


def _broken(values, variant="soak"):
    objects = copy.deepcopy(_all(render.render(values, variant)))
    return objects, {(o["kind"], o["metadata"]["name"]): o for o in objects}


def test_checker_names_each_broken_case(values):
    objects, by = _broken(values)
    del by[("ConfigMap", "llmload-config")]["data"]["backends.toml"]
    assert check.problems(objects) == [
        f"Job/llmload-{role} container {role}: --llm-backends /etc/llmload/backends.toml: "
        "key 'backends.toml' is missing from ConfigMap llmload-config"
        for role in ("master",)
    ]

    objects, by = _broken(values)
    args = _args(by[("Job", "llmload-worker")])
    args[args.index("--master-port") + 1] = "5558"
    assert check.problems(objects) == [
        "Job/llmload-worker container worker: --master-port 5558 but the master listens on "
        "Service/llmload-master port 5557 (--master-bind-port 5557)"
    ]

    objects, by = _broken(values)
    by[("Job", "llmload-worker")]["spec"]["parallelism"] = 5
    assert check.problems(objects) == [
        "Job/llmload-master: --expect-workers 4 does not match the worker count 5 "
        "(worker Job parallelism / Deployment replicas)"
    ]

    objects, by = _broken(values, "webui")
    args = _args(by[("Deployment", "llmload-master")])
    args[args.index("--llm-prometheus-host") + 1] = "127.0.0.1"
    args[args.index("--web-host") + 1] = "localhost"
    assert check.problems(objects) == [
        "Deployment/llmload-master container master: --web-host localhost is not reachable by the web UI "
        "in the cluster (use 0.0.0.0)",
        "Deployment/llmload-master container master: --llm-prometheus-host 127.0.0.1 is not reachable by "
        "Prometheus in the cluster (use 0.0.0.0)",
    ]

    objects, by = _broken(values)
    args = _args(by[("Job", "llmload-master")])
    del args[args.index("--master-bind-host") : args.index("--master-bind-host") + 2]
    assert check.problems(objects) == [
        "Job/llmload-master container master: --master-bind-host is not given; the workers cannot reach a "
        "loopback default (use 0.0.0.0)"
    ]


def test_checker_catches_keys_outside_secrets_and_bad_backends(values):
    objects, by = _broken(values)
    master = by[("Job", "llmload-master")]["spec"]["template"]["spec"]["containers"][0]
    master["args"] += ["--llm-api-key", "sk-x"]
    master["env"][1] = {"name": "LLMLOAD_API_KEY", "value": "sk-x"}
    config = by[("ConfigMap", "llmload-config")]["data"]
    config["backends.toml"] = '[[backend]]\nname = "a"\napi_key_env = "A_KEY"\n'
    found = check.problems(objects)
    assert "Job/llmload-master container master: --llm-api-key in the args; pass keys through a Secret" in found
    assert (
        "Job/llmload-master container master: env LLMLOAD_API_KEY has a literal value; use valueFrom.secretKeyRef"
        in found
    )
    assert "ConfigMap llmload-config key backends.toml: backend 1 has no 'base_url'" in found
    assert "Job/llmload-master container master: backend a's api_key_env A_KEY is not in the environment" in found


def test_cli_render_write_and_check(tmp_path):
    py = sys.executable
    out = subprocess.run(
        [py, "deploy/render.py", "--variant", "soak", "--monitoring", "operator", "--gke", "-o", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == [str(tmp_path / "llmload.yaml"), str(tmp_path / "after" / "results-reader.yaml")]
    ok = subprocess.run(
        [py, "deploy/check.py", str(tmp_path / "llmload.yaml")], cwd=ROOT, capture_output=True, text=True
    )
    assert (ok.returncode, ok.stdout) == (0, "ok\n")
    text = (
        (tmp_path / "llmload.yaml")
        .read_text()
        .replace("- --expect-workers\n        - '4'", "- --expect-workers\n        - '3'")
    )
    (tmp_path / "bad.yaml").write_text(text)
    bad = subprocess.run([py, "deploy/check.py", str(tmp_path / "bad.yaml")], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 1
    assert bad.stdout == (
        "Job/llmload-master: --expect-workers 3 does not match the worker count 4 "
        "(worker Job parallelism / Deployment replicas)\n"
    )
    stdout = subprocess.run(
        [py, "deploy/render.py", "--workers", "2"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert "- --expect-workers\n        - '2'" in stdout.stdout
