"""Locust's internals that llmload relies on, in one place (pyproject.toml bounds Locust from above).

Locust 2.47 offers no public hook for these; each is used here and only here:

* **Web UI template arguments**: ``WebUI.update_template_args()`` rebuilds
  ``template_args`` before each page; llmload wraps it (an instance
  attribute on that one WebUI) to blank secret options afterwards.
* **Endpoint names**: Locust's Flask blueprint names its views
  ``locust.request_stats`` (the stats JSON polled by the page),
  ``locust.swarm`` (the start form) and ``locust.index``; llmload matches
  endpoints, not paths, so that ``--web-base-path`` works.
* **Form handling**: Locust's swarm view reads ``request.form``, which
  Flask caches as a settable property: llmload replaces it to keep a secret
  left blank in the form.
* **Load shapes**: Locust creates the ``LoadTestShape`` instance when it
  loads the locustfile, sets its ``runner`` when the runner is created, and
  does not apply ``-t/--run-time`` to a shape (the headless main greenlet
  joins the shape first): ``llmload.capacity`` reads ``run_time`` itself.
* **The page's build**: ``WebUI`` renders ``index.html`` from its Flask
  app's ``template_folder`` (what ``--build-path`` sets) and serves
  ``assets/`` from there, falling back to its own assets (favicons):
  llmload points it at its own build of Locust's UI (``llmload/webui_app``)
  before the first page is rendered.
* **Runner states and roles** are Locust's public constants and classes
  (``locust.runners.STATE_*``, ``MasterRunner``, ``WorkerRunner``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import request

REQUEST_STATS_ENDPOINT = "locust.request_stats"
SWARM_ENDPOINT = "locust.swarm"
INDEX_ENDPOINT = "locust.index"


def after_template_args(web_ui: Any, hook: Callable[[dict[str, Any]], None]) -> None:
    """Call ``hook(template_args)`` each time Locust rebuilds the page's template arguments."""
    rebuild = web_ui.update_template_args

    def update_template_args() -> None:
        rebuild()
        hook(web_ui.template_args)

    web_ui.update_template_args = update_template_args
    if web_ui.environment.runner is not None:
        update_template_args()


def use_web_ui_build(web_ui: Any, path: str) -> None:
    """Serve the page from the web UI build in ``path`` (as ``--build-path`` would); before the first page."""
    app = web_ui.app
    app.template_folder = path
    app.__dict__.pop("jinja_loader", None)  # Flask caches the loader of the old folder once it is used


def replace_request_form(form: Any) -> None:
    """Make the current request's form ``form`` for the view that handles it."""
    request.form = form
