"""Every function a page can call, registered in one place, and the HTML snippets they emit.

Pages are Jinja templates (``generator/site/render.py``); their globals come from
``page_globals``. The markup that the site adds around a page (provenance, the
stale and failure notices, figures, the print cover) lives in Jinja templates
under ``generator/site/templates/``, not in Python strings.
"""
from __future__ import annotations

import datetime as dt
import itertools
import os
from pathlib import Path
from typing import Any, Callable

import jinja2
from markupsafe import Markup

from generator.errors import PageError
from generator.site import figures
from generator.site.formatting import FILTERS
from generator.site.render import ResultsView, escape, function_source

TEMPLATES = Path(__file__).resolve().parent / "templates"


def _cell(text: object) -> str:
    """Text safe inside a Markdown table cell and as HTML."""
    return escape(text)


def snippets() -> jinja2.Environment:
    """The environment of the site's own snippets (provenance, notices, figures, cover)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined,
                             autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",),
                                                                 default_for_string=False),
                             keep_trailing_newline=True)
    env.filters.update(FILTERS)
    env.filters["cell"] = _cell
    return env


def render_snippet(env: jinja2.Environment, template: str, **values: Any) -> str:
    return env.get_template(template).render(**values)


class Figures:
    """Figures drawn while a page renders, parked in slots until its HTML exists (Markdown would mangle SVG)."""

    def __init__(self, env: jinja2.Environment) -> None:
        self._env = env
        self._ids = itertools.count()
        self._slots: dict[str, str] = {}

    def place(self, experiment: str, data: dict, summary: dict, name: str | None, caption: str) -> Markup:
        svg = figures.render(experiment, data, summary, name)
        slot = f"hb-figure-{next(self._ids)}"
        self._slots[slot] = render_snippet(self._env, "figure.html.j2", svg=Markup(svg), caption=caption)
        return Markup(f'\n\n<div class="hb-slot" id="{slot}"></div>\n\n')

    def fill(self, page_html: str) -> str:
        for slot in [s for s in self._slots if s in page_html]:
            page_html = page_html.replace(f'<div class="hb-slot" id="{slot}"></div>', self._slots.pop(slot))
        return page_html


def _lookup(obj: Any, path: str, where: str) -> Any:
    for part in path.split("."):
        if not isinstance(obj, dict) or part not in obj:
            raise PageError(f"{where}: has no field '{path}' (stopped at '{part}')")
        obj = obj[part]
    return obj


def hosts_table(hosts: list[dict], rows: list[dict], page: str) -> Markup:
    """A table of one figure per row and one host per column, from a declaration of its rows.

    Each row is ``{"label", "experiment", "path", "format"}``; ``path`` starts with ``data.`` (what was
    measured) or ``summary.`` (what ``summarize`` derived). A host without a good result for the
    experiment shows "—"; a current result that lacks the path fails the build; a value of null (the
    result says the figure does not apply to that host, e.g. a CUDA figure on a CPU) shows "n/a".
    A † marks a stale result.
    """
    out_rows = []
    for row in rows:
        missing = {"label", "experiment", "path", "format"} - set(row)
        if missing:
            raise PageError(f"{page}: hosts_table row {row!r} lacks {', '.join(sorted(missing))}")
        part, _, rest = row["path"].partition(".")
        if part not in ("data", "summary") or not rest:
            raise PageError(f"{page}: hosts_table path {row['path']!r} must start with 'data.' or 'summary.'")
        fmt = FILTERS.get(row["format"]) if row["format"] != "text" else str
        if fmt is None:
            raise PageError(f"{page}: hosts_table format {row['format']!r} is not one of "
                            f"{', '.join(sorted(FILTERS))}, text")
        cells = []
        for h in hosts:
            run = h["runs"].get(row["experiment"])
            if row["experiment"] not in h["r"]:  # no good result on this host (none, or only a failed run)
                cells.append("—")
                continue
            source = h["r"] if part == "data" else h["summary"]
            value = _lookup(source[row["experiment"]], rest,
                            f"{page}: host {h['slug']}, experiment {row['experiment']} ({part})")
            text = "n/a" if value is None else fmt(value)
            cells.append(escape(text) + (" †" if run["stale"] else ""))
        out_rows.append({"label": escape(row["label"]), "cells": cells})
    labels = [f"`{h['slug']}`" + (" (primary)" if h["primary"] else "") for h in hosts]
    env = snippets()
    return Markup(render_snippet(env, "hosts-table.md.j2", hosts=[{"label": lb} for lb in labels], rows=out_rows))


def page_globals(*, page_uri: str, page_url: str, data: ResultsView, summary: ResultsView, hosts: list[dict],
                 host: dict, env: dict, current_schema: int, known: set[str], figs: Figures,
                 snippet_env: jinja2.Environment, cheatsheet_parts: list[str]) -> dict[str, Any]:
    """The names a page sees: results, their summaries, hosts, and the page functions."""

    def figure(experiment: str, name: str | None = None, caption: str = "") -> Markup:
        return figs.place(experiment, data[experiment], summary[experiment], name, caption)

    def notebook(experiment: str) -> Markup:
        if experiment not in known:
            raise PageError(f"docs/{page_uri}: notebook(): no experiment named {experiment!r}")
        rel = os.path.relpath(f"experiments/{experiment}.py", os.path.dirname(page_uri) or ".")
        depth = page_url.count("/")  # use_directory_urls: "a/b/" is two folders below the site root
        ipynb = "../" * depth + f"experiments/{experiment}/{experiment}.ipynb"
        return Markup(render_snippet(snippet_env, "notebook.md.j2", name=experiment, page_link=rel,
                                     ipynb=ipynb).rstrip("\n"))

    def table(rows: list[dict]) -> Markup:
        return hosts_table(hosts, rows, f"docs/{page_uri}")

    functions: dict[str, Callable[..., Any]] = {
        "figure": figure, "notebook": notebook, "source": function_source, "hosts_table": table,
    }
    from experiments.lib import estimator  # torch-free: the calculator never waits on a measurement

    return {"r": data, "summary": summary, "host": host, "env": env, "hosts": hosts,
            "current_schema": current_schema, "cheatsheet_parts": cheatsheet_parts,
            "calculator": estimator.calculator_inputs(), **functions}


def provenance(env: jinja2.Environment, host: dict, runs: list[tuple[str, dict]], compact: bool) -> str:
    # the same rounding as the ``bytes`` filter, so a footer and the page above it give one figure
    values = {"host": host, "memory_gib": FILTERS["num"](host["device_memory_bytes"] / 2**30), "runs": runs}
    if compact:  # one paragraph, for the printed cheat sheet
        dates = sorted(e["started_at"] for _, e in runs)
        values.update(torches=sorted({escape(e["env"]["torch"]) for _, e in runs}),
                      commits=sorted({escape(e["env"]["git_sha"] or "unknown") for _, e in runs}),
                      first=dates[0], last=dates[-1])
        return render_snippet(env, "provenance-compact.md.j2", **values)
    return render_snippet(env, "provenance.md.j2", **values)


def cover_values(primary) -> dict[str, Any]:
    """What the print cover says about the measurements behind the handbook."""
    if primary is None:
        return {"host": None, "env": {}, "latest": None, "printed": dt.date.today().isoformat()}
    newest = primary.newest or {}
    return {"host": primary.host, "env": primary.env, "latest": newest.get("started_at"),
            "printed": dt.date.today().isoformat()}
