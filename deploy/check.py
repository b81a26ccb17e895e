#!/usr/bin/env python3
"""Check that rendered llmload manifests hang together (docs/kubernetes.md).

    python deploy/check.py out/llmload.yaml            # files written by render.py (or edited by hand)
    python deploy/render.py --variant soak | python deploy/check.py -
    python deploy/check.py --render --variant webui --monitoring gmp --gke

Prints one line per problem and exits 1, or prints ``ok`` and exits 0. It
catches what would make a run fail or hang in the cluster, which the
Kubernetes schemas cannot see: a path in the args that no ConfigMap key
provides, a backends file without a backend's name or URL, workers pointed at a
port or host where the master does not listen, ``--expect-workers`` that
differs from the worker count (a headless run would wait forever), a listener
left on llmload's loopback default, and an API key anywhere but a Secret
reference. ``problems(objects)`` is the same check for Python callers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ALL_INTERFACES = ("0.0.0.0", "::", "[::]")
SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD")
SECRET_ARGS = ("--llm-api-key", "--api-key", "--hf-token")


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    if obj.get("kind") in ("Job", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"):
        return ((obj.get("spec") or {}).get("template") or {}).get("spec")
    if obj.get("kind") == "Pod":
        return obj.get("spec")
    return None


def _option(args: list[str], name: str) -> str | None:
    """The value of ``name`` in an argument list (``--x v`` or ``--x=v``), or None."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _locust_containers(objects: list[dict[str, Any]]):
    """(object, pod spec, container, role) of every Locust container; role is master, worker or local."""
    for obj in objects:
        spec = _pod_spec(obj)
        if not spec:
            continue
        for container in spec.get("containers") or []:
            command = [str(c) for c in container.get("command") or []]
            if not command or Path(command[0]).name != "locust" and "locust" not in command[:3]:
                continue
            args = [str(a) for a in container.get("args") or []]
            role = "master" if "--master" in args else "worker" if "--worker" in args else "local"
            yield obj, spec, container, role


def _name(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"


def _replicas(obj: dict[str, Any]) -> int | None:
    spec = obj.get("spec") or {}
    if obj.get("kind") == "Job":
        return spec.get("parallelism", 1)
    return spec.get("replicas", 1)


def problems(objects: list[dict[str, Any]]) -> list[str]:
    """Every inconsistency of a set of rendered objects, one clear sentence each."""
    objects = [o for o in objects if isinstance(o, dict)]
    out: list[str] = []
    configmaps = {(o.get("metadata") or {}).get("name"): o for o in objects if o.get("kind") == "ConfigMap"}
    services = [o for o in objects if o.get("kind") == "Service"]
    containers = list(_locust_containers(objects))
    masters = [c for c in containers if c[3] == "master"]
    workers = [c for c in containers if c[3] == "worker"]
    if not masters:
        out.append("no Locust master container (a `locust` command with --master) in the manifests")
    if masters and not workers:
        out.append("no Locust worker container (a `locust` command with --worker) in the manifests")

    for obj, spec, container, role in containers:
        where = f"{_name(obj)} container {container.get('name')}"
        args = [str(a) for a in container.get("args") or []]
        out += _check_paths(where, spec, container, args, configmaps)
        out += _check_secrets_in_container(where, container, args)
        if role == "master":
            out += _check_listeners(where, container, args)

    for obj, _spec, _container, _role in masters:
        if obj.get("kind") == "Job":
            job_spec = obj.get("spec") or {}
            if job_spec.get("backoffLimit") != 0:
                out.append(f"{_name(obj)}: backoffLimit is {job_spec.get('backoffLimit')!r}, expected 0 (never rerun)")
            if (_pod_spec(obj) or {}).get("restartPolicy") != "Never":
                out.append(f"{_name(obj)}: restartPolicy must be Never, so that the Job ends with Locust's exit code")

    if masters:
        m_obj, _s, m_container, _r = masters[0]
        m_args = [str(a) for a in m_container.get("args") or []]
        bind_port = _option(m_args, "--master-bind-port") or "5557"
        expect = _option(m_args, "--expect-workers")
        total = sum(_replicas(o) or 0 for o in {id(w[0]): w[0] for w in workers}.values())
        if expect is None:
            out.append(f"{_name(m_obj)}: --expect-workers is missing; the workers' count is {total}")
        elif workers and str(expect) != str(total):
            out.append(
                f"{_name(m_obj)}: --expect-workers {expect} does not match the worker count {total} "
                "(worker Job parallelism / Deployment replicas)"
            )
        master_labels = ((m_obj.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels", {})
        service = _service_for(services, master_labels)
        if service is None:
            out.append(f"{_name(m_obj)}: no Service selects the master's pod labels {master_labels}")
        for w_obj, _ws, w_container, _wr in workers:
            w_args = [str(a) for a in w_container.get("args") or []]
            port = _option(w_args, "--master-port") or "5557"
            host = _option(w_args, "--master-host") or "127.0.0.1"
            where = f"{_name(w_obj)} container {w_container.get('name')}"
            if service is None:
                continue
            svc_port = _service_port_to(service, m_container, bind_port)
            if svc_port is None:
                out.append(f"Service/{service['metadata']['name']}: no port reaches the master's port {bind_port}")
            elif str(port) != str(svc_port):
                out.append(
                    f"{where}: --master-port {port} but the master listens on Service/"
                    f"{service['metadata']['name']} port {svc_port} (--master-bind-port {bind_port})"
                )
            svc_name = service["metadata"]["name"]
            if host.split(".")[0] != svc_name:
                out.append(f"{where}: --master-host {host} is not the master's Service {svc_name}")

    for obj in objects:
        if obj.get("kind") == "Secret":
            out.append(f"{_name(obj)}: a Secret is rendered; create it with kubectl create secret instead")
        if obj.get("kind") == "ConfigMap":
            for key, text in (obj.get("data") or {}).items():
                for word in SECRET_ARGS:
                    if word in str(text).split():
                        out.append(f"{_name(obj)}: key {key} passes {word}; keys belong in a Secret")
    return out


def _service_for(services: list[dict[str, Any]], labels: dict[str, str]) -> dict[str, Any] | None:
    for service in services:
        selector = (service.get("spec") or {}).get("selector") or {}
        if selector and all(labels.get(k) == v for k, v in selector.items()):
            return service
    return None


def _service_port_to(service: dict[str, Any], container: dict[str, Any], bind_port: str) -> int | None:
    named = {str(p.get("name")): str(p.get("containerPort")) for p in container.get("ports") or []}
    for port in (service.get("spec") or {}).get("ports") or []:
        target = str(port.get("targetPort", port.get("port")))
        if named.get(target, target) == str(bind_port):
            return port.get("port")
    return None


def _check_paths(where: str, spec: dict[str, Any], container: dict[str, Any], args: list[str], configmaps):
    """Each argument that is a path under a ConfigMap mount must be a key of that ConfigMap."""
    out = []
    volumes = {v.get("name"): v for v in spec.get("volumes") or []}
    mounts = []
    for mount in container.get("volumeMounts") or []:
        volume = volumes.get(mount.get("name")) or {}
        if "configMap" in volume:
            mounts.append((mount["mountPath"].rstrip("/") + "/", volume["configMap"].get("name")))
    for i, arg in enumerate(args):
        for prefix, cm_name in mounts:
            if not arg.startswith(prefix):
                continue
            key = arg[len(prefix) :]
            option = args[i - 1] if i else "argument"
            cm = configmaps.get(cm_name)
            if cm is None:
                return [f"{where}: {option} {arg}: ConfigMap {cm_name} is not in the manifests"]
            data = cm.get("data") or {}
            if key not in data:
                out.append(f"{where}: {option} {arg}: key {key!r} is missing from ConfigMap {cm_name}")
            elif option == "--llm-backends":
                out += _check_backends(where, cm_name, key, data[key], container)
    return out


def _check_backends(where: str, cm_name: str, key: str, text: str, container: dict[str, Any]) -> list[str]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return [f"ConfigMap {cm_name} key {key}: not TOML ({exc})"]
    backends = doc.get("backend") or []
    if not backends:
        return [f"ConfigMap {cm_name} key {key}: no [[backend]] table"]
    env_names = {e.get("name") for e in container.get("env") or []}
    out = []
    for i, backend in enumerate(backends, 1):
        for required in ("name", "base_url"):
            if not backend.get(required):
                out.append(f"ConfigMap {cm_name} key {key}: backend {i} has no {required!r}")
        env = backend.get("api_key_env")
        if env and env not in env_names:
            out.append(f"{where}: backend {backend.get('name', i)}'s api_key_env {env} is not in the environment")
    return out


def _check_secrets_in_container(where: str, container: dict[str, Any], args: list[str]) -> list[str]:
    out = [f"{where}: {a.split('=')[0]} in the args; pass keys through a Secret" for a in args if _secret_arg(a)]
    for env in container.get("env") or []:
        name = str(env.get("name", ""))
        if "value" in env and any(word in name.upper() for word in SECRET_WORDS) and env["value"]:
            out.append(f"{where}: env {name} has a literal value; use valueFrom.secretKeyRef")
    return out


def _secret_arg(arg: str) -> bool:
    return any(arg == word or arg.startswith(word + "=") for word in SECRET_ARGS)


def _check_listeners(where: str, container: dict[str, Any], args: list[str]) -> list[str]:
    """Every listener the cluster must reach binds all interfaces (llmload's defaults are loopback)."""
    listeners = [("--master-bind-host", "the workers")]
    if "--headless" not in args:
        listeners.append(("--web-host", "the web UI"))
    if _option(args, "--llm-prometheus-port") not in (None, ""):
        listeners.append(("--llm-prometheus-host", "Prometheus"))
    out = []
    for option, who in listeners:
        value = _option(args, option)
        if value is None:
            out.append(f"{where}: {option} is not given; {who} cannot reach a loopback default (use 0.0.0.0)")
        elif value not in ALL_INTERFACES:
            out.append(f"{where}: {option} {value} is not reachable by {who} in the cluster (use 0.0.0.0)")
    return out


def load(paths: list[str]) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for path in paths:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
        objects += [o for o in yaml.safe_load_all(text) if o]
    return objects


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", help="rendered YAML files ('-' = stdin)")
    parser.add_argument("--render", action="store_true", help="render with deploy/render.py's options and check")
    parser.add_argument("--values", help="values file for --render")
    parser.add_argument("--variant", default="soak")
    parser.add_argument("--monitoring", default="none")
    parser.add_argument("--gke", action="store_true")
    args = parser.parse_args(argv)
    if args.render:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import render  # deploy/render.py

        values = render.load_values(args.values or render.DEFAULT_VALUES)
        rendered = render.render(values, args.variant, args.monitoring, args.gke)
        objects = rendered.objects + rendered.after
    elif args.files:
        objects = load(args.files)
    else:
        parser.error("give rendered files, '-' for stdin, or --render")
    found = problems(objects)
    for problem in found:
        print(problem)
    if not found:
        print("ok")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
