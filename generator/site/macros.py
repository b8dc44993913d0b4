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

# The printed cheat sheet is two A4 landscape pages. Page 1 holds the rules and the measurements (these parts, in
# this order: update rules and the accumulation + AMP loop; bytes per parameter and the peak; activations,
# checkpointing and number formats; beyond checkpointing; tight budgets); page 2 the sizing and the choices: the
# when-to-use table, then every other part (will it fit, ZeRO, this host), by file name.
CHEATSHEET_PAGE_ONE = ("_cheatsheet/02-optimizer-semantics.md", "_cheatsheet/01-where-the-memory-goes.md",
                       "_cheatsheet/01b-memory-over-one-step.md", "_cheatsheet/03-activations-precision.md",
                       "_cheatsheet/04b-beyond-checkpointing.md", "_cheatsheet/06-tight-budget.md")
# The experiment whose model the cheat sheet names as its reference scale, the first one with a result.
SHEET_REFERENCE = ("optimizer_state", "memory_timeline", "checkpointing")


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

    def place(self, experiment: str, data: dict, summary: dict, name: str | None, caption: str,
              measured: str) -> Markup:
        svg = figures.render(experiment, data, summary, name)
        slot = f"hb-figure-{next(self._ids)}"
        self._slots[slot] = render_snippet(self._env, "figure.html.j2", svg=Markup(svg), caption=caption,
                                           measured=measured)
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


def scale_of(summary: dict, experiment: str, page: str) -> str:
    """The model and scale an experiment measured at, from its summary's ``scale_label``.

    An experiment without one still renders (its caption says the scale is not stated);
    ``tests/test_captions.py`` holds every experiment of the real site to naming it.
    """
    label = summary.get("scale_label") if isinstance(summary, dict) else None
    if not isinstance(label, str) or not label:
        return f"model size not stated (experiments/{experiment}.py's summarize gives no scale_label)"
    return label


def measured_on(host: dict, scale: str) -> str:
    """The words every caption ends with: where it was measured and at what scale."""
    return f"Measured on {host['device']} ({host['cores']} cores, host {host['slug']}); {scale}."


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
    scales = []  # each experiment's scale on each host that has it: a GPU profile measures bigger models
    for name in dict.fromkeys(row["experiment"] for row in rows):
        on = [f"{scale_of(h['summary'][name], name, page)} ({h['slug']})" for h in hosts if name in h["summary"]]
        if on:
            scales.append(f"{name}, " + ", ".join(on))
    env = snippets()
    return Markup(render_snippet(env, "hosts-table.md.j2", hosts=[{"label": lb} for lb in labels], rows=out_rows,
                                 devices=[f"{h['host']['device']} ({h['host']['cores']} cores)" for h in hosts],
                                 scales=scales))


def page_globals(*, page_uri: str, page_url: str, data: ResultsView, summary: ResultsView, hosts: list[dict],
                 host: dict, env: dict, current_schema: int, known: set[str], figs: Figures,
                 snippet_env: jinja2.Environment, cheatsheet_parts: list[str]) -> dict[str, Any]:
    """The names a page sees: results, their summaries, hosts, and the page functions."""

    def predicted_by_estimator(scale: str) -> str:
        return f"Predicted by the estimator, not measured; {scale}. Host: {host['device']}."

    def figure(experiment: str, name: str | None = None, caption: str = "", *, predicted: bool = False) -> Markup:
        """A figure of ``experiment``, its caption ending with where and at what scale it was measured."""
        scale = scale_of(summary[experiment], experiment, f"docs/{page_uri}")
        tail = predicted_by_estimator(scale) if predicted else measured_on(host, scale)
        return figs.place(experiment, data[experiment], summary[experiment], name, caption, tail)

    def caption(experiment: str | None = None, text: str = "", *, predicted: bool = False,
                source: str = "") -> Markup:
        """The caption under a table: its text, then where and at what scale its numbers were measured.

        ``predicted=True``: the table holds the estimator's predictions (not measurements) for the scale
        the experiment names; ``source``: the table is a formula or a cited figure, measured nowhere here.
        """
        where = f"docs/{page_uri}"
        if experiment is None:
            if not source:
                raise PageError(f"{where}: caption() without an experiment needs source=\"...\"")
            tail, kind = f"From {source}; not measured here.", "source"
        else:
            scale = scale_of(summary[experiment], experiment, where)
            tail = predicted_by_estimator(scale) if predicted else measured_on(host, scale)
            kind = "predicted" if predicted else "measured"
        return Markup(render_snippet(snippet_env, "caption.html.j2", text=text, tail=tail, kind=kind))

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

    def when_to_use(compact: bool = False) -> Markup:
        """The when-to-use table (``generator/site/when_to_use.py``), from this host's results.

        ``compact``: without the caption listing every experiment's scale (the cheat sheet says it once).
        """
        from generator.site import when_to_use as table_rows

        where = f"docs/{page_uri}"
        names = sorted({n for row in table_rows.ROWS for n in row["experiments"]})
        results = {n: {"data": data[n], "summary": summary[n]} for n in names if n in data}
        filled = table_rows.rows(results, where)
        scales = [f"{n}: {scale_of(results[n]['summary'], n, where)}" for n in names if n in results]
        return Markup(render_snippet(snippet_env, "when-to-use.md.j2", rows=filled, headings=table_rows.HEADINGS,
                                     columns=table_rows.COLUMNS, compact=compact, host=host, scales=scales))

    def cheatsheet_page(number: int) -> list[str]:
        """The cheat-sheet parts printed on page ``number`` (1 or 2), in print order."""
        first = [p for p in CHEATSHEET_PAGE_ONE if p in cheatsheet_parts]
        return first if number == 1 else [p for p in cheatsheet_parts if p not in first]

    def sheet_scale() -> str:
        """Where the cheat sheet's numbers were measured, and at what scale (one line)."""
        where = f"docs/{page_uri}"
        ref = next((n for n in SHEET_REFERENCE if n in data), None) or next(iter(data), None)
        if ref is None:
            raise PageError(f"{where}: no experiment has a result on this host: nothing to print")
        return (f"Measured on {host['device']} ({host['cores']} cores, host {host['slug']}) with small models "
                f"(reference: {scale_of(summary[ref], ref, where)}; each card's model is on its chapter's page). "
                f"Bytes per parameter hold at any size; time ratios were measured at this scale only. "
                f"Will-it-fit rows are the estimator's predictions.")

    functions: dict[str, Callable[..., Any]] = {
        "figure": figure, "caption": caption, "notebook": notebook, "source": function_source, "hosts_table": table,
        "when_to_use": when_to_use, "cheatsheet_page": cheatsheet_page, "sheet_scale": sheet_scale,
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
