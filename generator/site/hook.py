"""The mkdocs hook: every page is a Jinja template over the results.

Events, in build order:
- ``on_config``: load every host's results (a bad file fails the build with a
  one-line message naming it), pick the primary host.
- ``on_page_markdown``: render the page with the results in scope; append the
  provenance of the experiments it read; replace the body with a notice when
  one of them has no good result.
- ``on_page_content``: render math with KaTeX, put the figures in.
- ``on_post_build``: write the print page of the handbook and the notebooks.
- ``on_serve``: watch the results folder for live reload.

Settings come from the environment, so the CLI, tests and plain ``mkdocs
build`` share one path: ``HANDBOOK_RESULTS`` (default ``results``) and
``HANDBOOK_HOST`` (default: this machine's results where present), and
``HANDBOOK_EXPERIMENTS`` (the package holding the experiments; default
``experiments``; the tests point it at toy ones).
"""
from __future__ import annotations

import os
from pathlib import Path

from mkdocs.exceptions import PluginError

from generator.errors import HandbookError
from generator.site.site import SiteState

_state: SiteState | None = None  # mkdocs hooks are module functions; the build's state lives here


def _require() -> SiteState:
    if _state is None:
        raise PluginError("handbook hook: on_config did not run")
    return _state


def on_config(config, **_):
    global _state
    results = Path(os.environ.get("HANDBOOK_RESULTS", "results"))
    if not results.is_absolute():
        results = Path(config.config_file_path).parent / results
    try:
        _state = SiteState(config, results, os.environ.get("HANDBOOK_HOST") or None)
    except HandbookError as exc:
        raise PluginError(str(exc)) from None
    return config


def on_page_markdown(markdown, page, config, files, **_):
    try:
        return _require().page_markdown(markdown, page)
    except HandbookError as exc:
        raise PluginError(str(exc)) from None


def on_page_content(html, page, config, files, **_):
    try:
        return _require().page_content(html, page)
    except HandbookError as exc:
        raise PluginError(f"{page.file.src_uri}: {exc}") from None


def on_post_build(config, **_):
    _require().post_build(Path(config.site_dir))


def on_serve(server, config, builder, **_):
    server.watch(str(_require().results_dir))
    return server


def on_nav(nav, config, files, **_):
    _require().nav_order = [p.file.src_uri for p in nav.pages]
    return nav
