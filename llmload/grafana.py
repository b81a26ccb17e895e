"""The ``llmload grafana push`` sub-command: upload llmload's dashboards to a Grafana.

    GRAFANA_TOKEN=glsa_... llmload grafana push --url https://grafana.example.com [--folder llmload]

Credentials come from the environment, never the command line:
``GRAFANA_TOKEN`` (a service-account token), or ``GRAFANA_USER`` and
``GRAFANA_PASSWORD``, or ``user:password@`` in the URL. The folder is found by
title or created; every ``*.json`` file of ``--dashboards`` is uploaded into
it with ``overwrite``, so pushing again updates the same dashboards (their
``uid`` is stable). Uses the optional ``grafana-client`` package
(``pip install 'llmload[grafana]'``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmload.errors import ConfigError, LLMLoadError

if TYPE_CHECKING:
    from grafana_client import GrafanaApi

DEFAULT_FOLDER = "llmload"
# The dashboards live in the repository's dashboards/ folder, next to the package.
DEFAULT_DASHBOARDS = Path(__file__).resolve().parent.parent / "dashboards"
TIMEOUT_S = 10.0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register the ``grafana`` sub-command and its ``push`` action on ``subparsers``."""
    parser = subparsers.add_parser("grafana", help="push llmload's dashboards to Grafana")
    actions = parser.add_subparsers(dest="grafana_action", metavar="ACTION")
    push = actions.add_parser(
        "push",
        help="upload the dashboards into a Grafana folder (token from $GRAFANA_TOKEN)",
        description="Upload llmload's dashboards. Credentials: $GRAFANA_TOKEN, or $GRAFANA_USER and $GRAFANA_PASSWORD.",
    )
    push.add_argument("--url", required=True, help="Grafana base URL, e.g. http://127.0.0.1:3000")
    push.add_argument("--folder", default=DEFAULT_FOLDER, help=f"folder title (default: {DEFAULT_FOLDER})")
    push.add_argument(
        "--dashboards",
        default=None,
        metavar="DIR",
        help="folder of dashboard JSON files (default: llmload's dashboards/)",
    )
    push.set_defaults(func=run_push)
    parser.set_defaults(func=lambda _args: _usage(parser))
    return parser


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def credential_from_env(env: Mapping[str, str] | None = None) -> str | tuple[str, str] | None:
    """Return the token, or (user, password), from the environment; None when neither is set."""
    environ: Mapping[str, str] = os.environ if env is None else env
    token = environ.get("GRAFANA_TOKEN", "").strip()
    if token:
        return token
    user, password = environ.get("GRAFANA_USER", ""), environ.get("GRAFANA_PASSWORD", "")
    if user and password:
        return (user, password)
    return None


def load_dashboards(directory: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Read every ``*.json`` dashboard of ``directory``; a bad file is a one-line ``ConfigError``."""
    if not directory.is_dir():
        raise ConfigError(f"{directory}: no such dashboards folder (pass --dashboards DIR)")
    out = []
    for path in sorted(directory.glob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: not a readable JSON file ({exc})") from None
        if not isinstance(doc, dict) or not doc.get("uid") or not doc.get("panels"):
            raise ConfigError(f"{path}: not a Grafana dashboard (expected 'uid' and 'panels')")
        out.append((path, doc))
    if not out:
        raise ConfigError(f"--dashboards {directory}: no *.json dashboards there")
    return out


def folder_uid(title: str) -> str:
    """Return the stable uid llmload gives a folder it creates."""
    return re.sub(r"[^a-zA-Z0-9_-]+", "-", title).strip("-")[:40] or DEFAULT_FOLDER


def _redacted(url: str) -> str:
    return re.sub(r"//[^/@]*@", "//", url)


def push(
    url: str,
    *,
    folder: str = DEFAULT_FOLDER,
    dashboards_dir: Path | None = None,
    credential: str | tuple[str, str] | None = None,
) -> list[str]:
    """Upload the dashboards into ``folder`` and return their Grafana URLs."""
    try:
        from grafana_client import GrafanaApi
        from grafana_client.client import GrafanaClientError, GrafanaException, GrafanaUnauthorizedError
    except ImportError:
        raise ConfigError("grafana push needs grafana-client: pip install 'llmload[grafana]'") from None
    import niquests

    docs = load_dashboards(dashboards_dir or DEFAULT_DASHBOARDS)
    where = _redacted(url.rstrip("/"))
    api = GrafanaApi.from_url(url, credential=credential, timeout=TIMEOUT_S)
    try:
        uid = _find_or_create_folder(api, folder, GrafanaClientError)
        urls = []
        for _path, doc in docs:
            answer = api.dashboard.update_dashboard(
                {
                    "dashboard": {**doc, "id": None},
                    "folderUid": uid,
                    "overwrite": True,
                    "message": "llmload grafana push",
                }
            )
            urls.append(where + (answer or {}).get("url", f"/d/{doc['uid']}"))
        return urls
    except GrafanaUnauthorizedError:
        raise LLMLoadError(
            f"{where} rejected the credentials (401): check GRAFANA_TOKEN or GRAFANA_USER/GRAFANA_PASSWORD"
        ) from None
    except GrafanaClientError as exc:
        if exc.status_code == 403:
            raise LLMLoadError(
                f"{where} refused (403): the token needs permission to write dashboards and folders"
            ) from None
        raise LLMLoadError(f"{where}: {exc.message}") from None
    except GrafanaException as exc:
        raise LLMLoadError(f"{where}: {exc.message}") from None
    except niquests.exceptions.RequestException as exc:
        raise LLMLoadError(f"cannot reach Grafana at {where} ({type(exc).__name__})") from None


def _find_or_create_folder(api: GrafanaApi, title: str, client_error: type[Exception]) -> str:
    # grafana-client has no type information: its answers are untyped JSON, where a folder's uid is a string.
    found: str
    for existing in api.folder.get_all_folders() or []:
        if existing.get("title") == title:
            found = existing["uid"]
            return found
    uid = folder_uid(title)
    try:
        found = api.folder.create_folder(title, uid=uid)["uid"]
    except client_error as exc:
        if getattr(exc, "status_code", None) in (409, 412):  # created meanwhile, or its uid is taken
            found = api.folder.get_folder(uid)["uid"]
            return found
        raise
    return found


def run_push(args: argparse.Namespace) -> int:
    """Run ``llmload grafana push``."""
    credential = credential_from_env()
    if credential is None and "@" not in args.url:
        raise ConfigError("set GRAFANA_TOKEN (a service-account token), or GRAFANA_USER and GRAFANA_PASSWORD")
    dashboards_dir = Path(args.dashboards) if args.dashboards else None
    for url in push(args.url, folder=args.folder, dashboards_dir=dashboards_dir, credential=credential):
        print(f"pushed {url}")
    return 0
