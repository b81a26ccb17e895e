#!/usr/bin/env python3
"""Render llmload's Kubernetes manifests from one values file (docs/kubernetes.md).

    python deploy/render.py --variant soak --monitoring gmp --gke -o out/
    python deploy/render.py --variant webui --monitoring operator > llmload.yaml
    python deploy/render.py --values my-values.toml --variant soak | kubectl apply -f -

Variants: ``soak`` (headless: the master and the workers as Jobs, results on a
PersistentVolumeClaim) and ``webui`` (the master and the workers as
Deployments). Monitoring: ``none``, ``gmp`` (GKE Managed Service for
Prometheus: PodMonitoring + Rules) or ``operator`` (Prometheus Operator:
ServiceMonitor + PrometheusRule); with either, the Grafana dashboards as a
ConfigMap for Grafana's dashboard sidecar. ``--gke`` adds vLLM Deployments and
Services on GPU node pools and makes them the run's backends.

Everything comes from the checkout: the locustfile, scenario and backends go
into a ConfigMap, the rules from ``dashboards/rules/`` and the dashboards from
``dashboards/*.json`` are read, never copied, so the manifests cannot drift
from them. No Secret value is ever rendered: only references (``secretKeyRef``)
to Secrets created with ``kubectl create secret`` (docs/kubernetes.md).

Needs the standard library and PyYAML only (no Locust).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VALUES = Path(__file__).resolve().parent / "values.toml"
VARIANTS = ("soak", "webui")
MONITORING = ("none", "gmp", "operator")
CONFIG_MOUNT = "/etc/llmload"  # the ConfigMap with the locustfile, scenario and backends file
API_KEY_ENV = "LLMLOAD_API_KEY"  # what llmload's users read (llmload.options.API_KEY_ENV)
BACKENDS_FILE = "backends.toml"
ALL_INTERFACES = "0.0.0.0"
VLLM_PORT = 8000


@dataclass(frozen=True)
class Rendered:
    """The objects to apply now, and those to apply after a soak Job finished (the results reader)."""

    objects: list[dict[str, Any]]
    after: list[dict[str, Any]]


def load_values(path: Path | str = DEFAULT_VALUES) -> dict[str, Any]:
    with open(path, "rb") as handle:
        values = tomllib.load(handle)
    workers = values.get("workers")
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"{path}: workers must be a whole number >= 1, got {workers!r}")
    return values


# -- small builders ------------------------------------------------------------------------------


def _labels(values: dict[str, Any], component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": values["name"], "app.kubernetes.io/component": component}


def _meta(values: dict[str, Any], name: str, component: str, **extra_labels: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": values["namespace"],
        "labels": {**_labels(values, component), "app.kubernetes.io/part-of": "llmload", **extra_labels},
    }


def _secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    # optional: a keyless server needs no Secret; a missing key is then simply unset.
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": True}}}


def _resources(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: dict(spec[k]) for k in ("requests", "limits") if k in spec}


def names(values: dict[str, Any]) -> dict[str, str]:
    base = values["name"]
    return {
        "master": f"{base}-master",
        "worker": f"{base}-worker",
        "config": f"{base}-config",
        "results": f"{base}-results",
        "dashboards": f"{base}-dashboards",
        "rules": f"{base}-rules",
    }


# -- the backends file ------------------------------------------------------------------------------


def backend_entries(values: dict[str, Any], gke: bool) -> list[dict[str, Any]]:
    """The run's backends: the values file's own, or with ``--gke`` one per GPU type (with its price)."""
    if not gke:
        return [dict(b) for b in values.get("backend", [])]
    g = values["gke"]
    out = []
    for gpu in g["gpu"]:
        out.append(
            {
                "name": gpu["name"],
                "base_url": f"http://vllm-{gpu['name']}.{values['namespace']}.svc.cluster.local:{VLLM_PORT}",
                "model": g["model"],
                "gpu": gpu["gpu"],
                "engine": "vLLM " + g["vllm_image"].rsplit(":", 1)[-1],
                "price_per_hour": float(gpu["price_per_hour"]),
                "api_key_env": API_KEY_ENV,
            }
        )
    return out


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))  # a TOML basic string is a JSON string for these characters


def backends_toml(entries: list[dict[str, Any]]) -> str:
    lines = ["# llmload backends file, rendered by deploy/render.py (docs/scenarios.md).", ""]
    for entry in entries:
        lines.append("[[backend]]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in entry.items()]
        lines.append("")
    return "\n".join(lines)


# -- commands -------------------------------------------------------------------------------------


def master_args(values: dict[str, Any], variant: str) -> list[str]:
    run, ports = values["run"], values["ports"]
    args = [
        "--config",
        f"{CONFIG_MOUNT}/{Path(run['scenario']).name}",
        "-f",
        f"{CONFIG_MOUNT}/{Path(run['locustfile']).name}",
        "--llm-backends",
        f"{CONFIG_MOUNT}/{BACKENDS_FILE}",
        "--master",
        "--master-bind-host",
        ALL_INTERFACES,
        "--master-bind-port",
        str(ports["master"]),
        "--expect-workers",
        str(values["workers"]),
        "--llm-prometheus-host",
        ALL_INTERFACES,
        "--llm-prometheus-port",
        str(ports["exporter"]),
        "-u",
        str(run["users"]),
        "-r",
        str(run["spawn_rate"]),
        "--stop-timeout",
        str(run["stop_timeout"]),
        "--llm-results",
        f"{values['results']['mount']}/results.json",
        "--llm-html",
        f"{values['results']['mount']}/report.html",
    ]
    if variant == "soak":
        args += ["--headless", "-t", str(run["run_time"])]
    else:
        args += ["--web-host", ALL_INTERFACES, "--web-port", str(ports["web"])]
    return args + [str(a) for a in run.get("extra_args", [])]


def worker_args(values: dict[str, Any]) -> list[str]:
    return [
        "-f",
        f"{CONFIG_MOUNT}/{Path(values['run']['locustfile']).name}",
        "--worker",
        "--master-host",
        f"{names(values)['master']}.{values['namespace']}.svc.cluster.local",
        "--master-port",
        str(values["ports"]["master"]),
    ]


def _key_env(values: dict[str, Any], entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The API key of every process that reads one: LLMLOAD_API_KEY and each backend's api_key_env."""
    secret = values["secret"]
    env_names = [API_KEY_ENV] + [e["api_key_env"] for e in entries if e.get("api_key_env")]
    out, seen = [{"name": "PYTHONUNBUFFERED", "value": "1"}], set()
    for env_name in env_names:
        if env_name not in seen:
            seen.add(env_name)
            out.append(_secret_env(env_name, secret["name"], secret["key"]))
    return out


def _container(values: dict[str, Any], name: str, args: list[str], env: list[dict[str, Any]], role: str):
    container: dict[str, Any] = {
        "name": name,
        "image": values["image"],
        "imagePullPolicy": values.get("image_pull_policy", "IfNotPresent"),
        "command": ["locust"],
        "args": args,
        "env": env,
        "resources": _resources(values["resources"][role]),
        "volumeMounts": [{"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": True}],
        "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True},
    }
    return container


def _pod_spec(values: dict[str, Any], containers: list[dict[str, Any]], volumes: list[dict[str, Any]], restart: str):
    return {
        "restartPolicy": restart,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001},
        "containers": containers,
        "volumes": [{"name": "config", "configMap": {"name": names(values)["config"]}}, *volumes],
    }


# -- the load generator ---------------------------------------------------------------------------------


def load_generator(values: dict[str, Any], variant: str, gke: bool) -> Rendered:
    n = names(values)
    ports = values["ports"]
    entries = backend_entries(values, gke)
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(values, n["config"], "config"),
        "data": {
            Path(values["run"]["locustfile"]).name: (ROOT / values["run"]["locustfile"]).read_text(),
            Path(values["run"]["scenario"]).name: (ROOT / values["run"]["scenario"]).read_text(),
            BACKENDS_FILE: backends_toml(entries),
        },
    }
    pvc_spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": values["results"]["pvc_size"]}},
    }
    if values["results"].get("storage_class"):
        pvc_spec["storageClassName"] = values["results"]["storage_class"]
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _meta(values, n["results"], "results"),
        "spec": pvc_spec,
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(values, n["master"], "master"),
        "spec": {
            "selector": _labels(values, "master"),
            "ports": [
                {"name": "master", "port": ports["master"], "targetPort": "master"},
                {"name": "web", "port": ports["web"], "targetPort": "web"},
                {"name": "metrics", "port": ports["exporter"], "targetPort": "metrics"},
            ],
        },
    }
    env = _key_env(values, entries)
    master_c = _container(values, "master", master_args(values, variant), env, "master")
    master_c["ports"] = [
        {"name": "master", "containerPort": ports["master"]},
        {"name": "web", "containerPort": ports["web"]},
        {"name": "metrics", "containerPort": ports["exporter"]},
    ]
    master_c["volumeMounts"].append({"name": "results", "mountPath": values["results"]["mount"]})
    results_volume = {"name": "results", "persistentVolumeClaim": {"claimName": n["results"]}}
    worker_c = _container(values, "worker", worker_args(values), env, "worker")
    master_meta = {"labels": _labels(values, "master")}
    worker_meta = {"labels": _labels(values, "worker")}
    workers = values["workers"]
    if variant == "soak":
        master = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": _meta(values, n["master"], "master"),
            "spec": {
                "backoffLimit": 0,  # a soak is not retried: the Job fails with Locust's exit code
                "template": {
                    "metadata": master_meta,
                    "spec": _pod_spec(values, [master_c], [results_volume], "Never"),
                },
            },
        }
        worker = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": _meta(values, n["worker"], "worker"),
            "spec": {
                # Each worker quits (exit 0) when the master ends the test; a worker that started
                # before the master listened is restarted (backoffLimit).
                "completionMode": "Indexed",
                "completions": workers,
                "parallelism": workers,
                "backoffLimit": 2 * workers,
                "template": {"metadata": worker_meta, "spec": _pod_spec(values, [worker_c], [], "OnFailure")},
            },
        }
        reader_c = {
            "name": "reader",
            "image": values["image"],
            "imagePullPolicy": values.get("image_pull_policy", "IfNotPresent"),
            "command": ["sleep", "infinity"],
            "volumeMounts": [{"name": "results", "mountPath": values["results"]["mount"], "readOnly": True}],
            "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
            "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True},
        }
        reader = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": _meta(values, f"{values['name']}-results-reader", "results-reader"),
            "spec": {
                "restartPolicy": "Never",
                "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001},
                "containers": [reader_c],
                "volumes": [results_volume],
            },
        }
        return Rendered([config, pvc, service, master, worker], [reader])
    master = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(values, n["master"], "master"),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},  # one master; the results claim is ReadWriteOnce
            "selector": {"matchLabels": _labels(values, "master")},
            "template": {"metadata": master_meta, "spec": _pod_spec(values, [master_c], [results_volume], "Always")},
        },
    }
    worker = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(values, n["worker"], "worker"),
        "spec": {
            "replicas": workers,
            "selector": {"matchLabels": _labels(values, "worker")},
            "template": {"metadata": worker_meta, "spec": _pod_spec(values, [worker_c], [], "Always")},
        },
    }
    return Rendered([config, pvc, service, master, worker], [])


# -- monitoring -------------------------------------------------------------------------------------


def rule_groups(values: dict[str, Any]) -> list[dict[str, Any]]:
    """The alerting and recording rule groups of ``dashboards/rules/`` (Prometheus rule-file format)."""
    doc = yaml.safe_load((ROOT / values["monitoring"]["rules"]).read_text())
    return doc["groups"]


def dashboards_data() -> dict[str, str]:
    """Every dashboard of ``dashboards/*.json``, byte for byte."""
    return {path.name: path.read_text() for path in sorted((ROOT / "dashboards").glob("*.json"))}


def monitoring(values: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    if kind == "none":
        return []
    n, mon = names(values), values["monitoring"]
    dashboards = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(values, n["dashboards"], "dashboards", **mon["grafana_label"]),
        "data": dashboards_data(),
    }
    endpoint = {"port": "metrics", "path": "/metrics", "interval": mon["scrape_interval"]}
    if kind == "gmp":
        scrape = {
            "apiVersion": "monitoring.googleapis.com/v1",
            "kind": "PodMonitoring",
            "metadata": _meta(values, n["master"], "monitoring"),
            "spec": {"selector": {"matchLabels": _labels(values, "master")}, "endpoints": [endpoint]},
        }
        rules = {
            "apiVersion": "monitoring.googleapis.com/v1",
            "kind": "Rules",
            "metadata": _meta(values, n["rules"], "monitoring"),
            "spec": {"groups": rule_groups(values)},
        }
    else:
        extra = dict(mon.get("operator_labels", {}))
        scrape = {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "ServiceMonitor",
            "metadata": _meta(values, n["master"], "monitoring", **extra),
            "spec": {"selector": {"matchLabels": _labels(values, "master")}, "endpoints": [endpoint]},
        }
        rules = {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PrometheusRule",
            "metadata": _meta(values, n["rules"], "monitoring", **extra),
            "spec": {"groups": rule_groups(values)},
        }
    return [scrape, rules, dashboards]


# -- the GKE overlay: vLLM on GPU node pools ----------------------------------------------------------


def gke_backends(values: dict[str, Any]) -> list[dict[str, Any]]:
    g = values["gke"]
    out: list[dict[str, Any]] = []
    for gpu in g["gpu"]:
        name = f"vllm-{gpu['name']}"
        labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/component": "vllm"}
        count = str(gpu["gpus"])
        container = {
            "name": "vllm",
            "image": g["vllm_image"],
            "command": ["python3", "-m", "vllm.entrypoints.openai.api_server"],
            "args": [
                "--model",
                g["model"],
                "--host",
                ALL_INTERFACES,
                "--port",
                str(VLLM_PORT),
                "--tensor-parallel-size",
                count,
                *[str(a) for a in g.get("vllm_args", [])],
            ],
            "env": [
                _secret_env("HUGGING_FACE_HUB_TOKEN", g["hf_secret"], g["hf_secret_key"]),
                # the same key llmload sends; unset (no key) when the Secret is absent
                _secret_env("VLLM_API_KEY", values["secret"]["name"], values["secret"]["key"]),
            ],
            "ports": [{"name": "http", "containerPort": VLLM_PORT}],
            "resources": {
                "requests": {**gpu.get("requests", {}), "nvidia.com/gpu": count},
                "limits": {"nvidia.com/gpu": count},
            },
            "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 5},
            "startupProbe": {
                "httpGet": {"path": "/health", "port": "http"},
                "periodSeconds": 10,
                "failureThreshold": 90,  # model download and load: up to 15 minutes
            },
            "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
        }
        deployment = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": values["namespace"], "labels": dict(labels)},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": dict(labels)},
                    "spec": {
                        "nodeSelector": {"cloud.google.com/gke-accelerator": gpu["accelerator"]},
                        "containers": [container],
                        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory"}}],
                    },
                },
            },
        }
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": values["namespace"], "labels": dict(labels)},
            "spec": {"selector": labels, "ports": [{"name": "http", "port": VLLM_PORT, "targetPort": "http"}]},
        }
        out += [deployment, service]
    return out


# -- all together ---------------------------------------------------------------------------------------


def render(values: dict[str, Any], variant: str = "soak", monitoring_kind: str = "none", gke: bool = False) -> Rendered:
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    if monitoring_kind not in MONITORING:
        raise ValueError(f"monitoring must be one of {', '.join(MONITORING)}, got {monitoring_kind!r}")
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": values["namespace"]}}
    gen = load_generator(values, variant, gke)
    objects = [namespace, *(gke_backends(values) if gke else []), *gen.objects, *monitoring(values, monitoring_kind)]
    return Rendered(objects, gen.after)


def dump(objects: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(objects, sort_keys=False, width=120, default_flow_style=False)


def write(rendered: Rendered, out_dir: Path) -> list[Path]:
    """Write ``llmload.yaml`` (apply now) and ``after/results-reader.yaml`` (apply when the soak ended)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "llmload.yaml"]
    paths[0].write_text(dump(rendered.objects))
    if rendered.after:
        (out_dir / "after").mkdir(exist_ok=True)
        paths.append(out_dir / "after" / "results-reader.yaml")
        paths[1].write_text(dump(rendered.after))
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--values", default=str(DEFAULT_VALUES), help="values file (default deploy/values.toml)")
    parser.add_argument("--variant", choices=VARIANTS, default="soak", help="soak: Jobs; webui: Deployments")
    parser.add_argument("--monitoring", choices=MONITORING, default="none", help="gmp, operator or none")
    parser.add_argument("--gke", action="store_true", help="add vLLM backends on GKE GPU node pools")
    parser.add_argument("--workers", type=int, help="override the values file's worker count")
    parser.add_argument("-o", "--output", help="directory to write (default: the objects to stdout)")
    args = parser.parse_args(argv)
    try:
        values = load_values(args.values)
        if args.workers is not None:
            values["workers"] = args.workers
            load_values_check(values)
        rendered = render(values, args.variant, args.monitoring, args.gke)
    except (OSError, ValueError, KeyError) as exc:
        print(f"render.py: {exc}", file=sys.stderr)
        return 2
    if args.output:
        for path in write(rendered, Path(args.output)):
            print(path)
    else:
        sys.stdout.write(dump(rendered.objects))
    return 0


def load_values_check(values: dict[str, Any]) -> None:
    workers = values["workers"]
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")


if __name__ == "__main__":
    sys.exit(main())
