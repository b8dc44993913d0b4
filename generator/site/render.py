"""Pages as Jinja templates with the results in scope, under StrictUndefined.

``r.<experiment>.<key>`` reads the primary host's data. A missing key fails
the build naming the page, the line and the key; an experiment without a good
result on this host replaces the page body with a notice. Every experiment a
page reads is recorded, so its provenance can be stamped on that page.
"""
from __future__ import annotations

import ast
import html
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

import jinja2
from markupsafe import Markup

from generator.errors import PageError
from generator.site.formatting import FILTERS
from generator.site.results import HostResults


class UnknownExperiment(KeyError):
    """A page asked for an experiment that does not exist."""


class ExperimentUnavailable(Exception):
    def __init__(self, name: str, reason: str, detail: str = "") -> None:
        super().__init__(f"{name}: {reason}")
        self.name, self.reason, self.detail = name, reason, detail


MAPPING_METHODS = frozenset({"items", "keys", "values", "get"})


class HandbookEnvironment(jinja2.Environment):
    """Item lookup first for mappings, so data keys never resolve to dict methods."""

    def _lookup(self, obj: Any, key: Any) -> Any:
        if isinstance(obj, ResultsView):
            return obj[key]  # raises for an unknown or unavailable experiment
        if isinstance(obj, Mapping):
            if key in obj:
                return obj[key]
            if isinstance(key, str) and key in MAPPING_METHODS:
                return getattr(obj, key)  # data keys win; methods such as .items() still work
            keys = ", ".join(sorted(map(str, obj))[:15])
            return self.undefined(hint=f"key {key!r} is not in this mapping (it has: {keys})", obj=obj, name=key)
        return None

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Mapping):
            return self._lookup(obj, attribute)
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(obj, Mapping):
            return self._lookup(obj, argument)
        return super().getitem(obj, argument)


class ResultsView(Mapping):
    """The primary host's results by experiment, recording which ones a page reads.

    ``part`` picks what a lookup returns: ``"data"`` (what ``run`` measured, the page's ``r``)
    or ``"summary"`` (what ``summarize`` derived from it, the page's ``summary``). Both views
    of one page share ``used``, so the page's provenance lists every experiment it read.
    """

    def __init__(self, host: HostResults | None, known: set[str], part: str = "data",
                 used: set[str] | None = None) -> None:
        self._host = host
        self._known = known
        self._part = part
        self.used: set[str] = set() if used is None else used

    def __getitem__(self, name: str) -> dict:
        run = self._host.runs.get(name) if self._host else None
        if run and run.ok:
            self.used.add(name)
            return run.good["data"] if self._part == "data" else run.summary
        if name not in self._known:
            raise UnknownExperiment(name)
        if run and run.failed:
            raise ExperimentUnavailable(name, f"its last run ({run.failed['started_at']}) failed", run.failed["error"])
        where = f"host {self._host.slug}" if self._host else "any host"
        raise ExperimentUnavailable(name, f"there is no result for it on {where} yet "
                                          f"(run: handbook run --only {name})")

    def __iter__(self):
        return iter(sorted(n for n, r in (self._host.runs.items() if self._host else []) if r.ok))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __contains__(self, name: object) -> bool:
        return bool(self._host and name in self._host.runs and self._host.runs[name].ok)


def function_source(experiment: str, function: str) -> Markup:
    """The source text of ``function`` in ``experiments/<experiment>.py`` (shown in code blocks)."""
    from generator.site.summaries import experiments_dir

    path = experiments_dir() / f"{experiment}.py"
    text = path.read_text(encoding="utf-8")
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == function:
            return Markup(ast.get_source_segment(text, node))
    raise PageError(f"experiments/{experiment}.py has no function {function!r}")


def make_environment(docs_dir: Path) -> HandbookEnvironment:
    env = HandbookEnvironment(
        loader=jinja2.FileSystemLoader(str(docs_dir)),
        undefined=jinja2.StrictUndefined,
        autoescape=True,
        keep_trailing_newline=True,
    )
    env.filters.update(FILTERS)
    return env


def error_line(exc: BaseException, page: str) -> str:
    lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__) if f.filename == page]
    return f" line {lines[-1]}" if lines else ""


def render_page(env: HandbookEnvironment, source: str, page: str, context: dict[str, Any],
                on_error: Callable[[ExperimentUnavailable], str]) -> str:
    """Render one page; Jinja errors become ``PageError`` naming the page, line and key."""
    try:
        code = env.compile(source, name=page, filename=page)
        template = env.template_class.from_code(env, code, env.make_globals(None))
        return template.render(context)
    except ExperimentUnavailable as exc:
        return on_error(exc)
    except jinja2.TemplateSyntaxError as exc:
        raise PageError(f"{page} line {exc.lineno}: template syntax error: {exc.message}") from None
    except jinja2.UndefinedError as exc:
        raise PageError(f"{page}{error_line(exc, page)}: {exc.message}") from None
    except UnknownExperiment as exc:
        raise PageError(f"{page}{error_line(exc, page)}: no experiment named {exc.args[0]!r}") from None
    except PageError:
        raise
    except (TypeError, ValueError, KeyError) as exc:
        raise PageError(f"{page}{error_line(exc, page)}: {exc}") from None


def escape(text: object) -> str:
    return html.escape(str(text), quote=True).replace("|", "&#124;")
