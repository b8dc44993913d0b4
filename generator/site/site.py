"""The state of one site build: results, the Jinja environment, figures, math, print page."""
from __future__ import annotations

import html
import itertools
import re
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from markupsafe import Markup

from generator import envelope
from generator.site import figures
from generator.site.katex import Katex
from generator.site.render import (ExperimentUnavailable, ResultsView, escape, function_source, make_environment,
                                   render_page)
from generator.site.results import HostResults, load_all, pick_primary

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS = REPO / "experiments"


TOC_MATH = re.compile(r"\\\((.*?)\\\)")


def _plain_math_in_toc(items) -> None:
    """Headings with math: the table of contents shows the TeX source without its delimiters."""
    for item in items or []:
        item.title = TOC_MATH.sub(lambda m: m.group(1), item.title)
        _plain_math_in_toc(item.children)


@dataclass
class PrintedPage:
    title: str
    src_uri: str
    html: str


@dataclass
class SiteState:
    config: Any
    results_dir: Path
    wanted_host: str | None
    hosts: dict[str, HostResults] = field(init=False)
    primary: str | None = field(init=False)
    nav_order: list[str] = field(default_factory=list)
    printed: dict[str, PrintedPage] = field(default_factory=dict)
    _figures: dict[str, str] = field(default_factory=dict)
    _katex: Katex | None = None

    def __post_init__(self) -> None:
        self.docs_dir = Path(self.config.docs_dir)
        self.hosts = load_all(self.results_dir)
        self.primary = pick_primary(self.hosts, self.results_dir, self.wanted_host)
        self.env = make_environment(self.docs_dir)
        self.known = {p.stem for p in EXPERIMENTS.glob("*.py") if not p.name.startswith("_")}
        self._ids = itertools.count()

    # ------------------------------------------------------------------ context
    @property
    def primary_results(self) -> HostResults | None:
        return self.hosts.get(self.primary) if self.primary else None

    def hosts_context(self) -> list[dict]:
        out = []
        for slug, hr in self.hosts.items():
            runs = {}
            for name, run in sorted(hr.runs.items()):
                latest = run.failed or run.good
                runs[name] = {
                    "status": "ok" if run.ok else "failed",
                    "profile": latest["profile"],
                    "started_at": latest["started_at"],
                    "torch": latest["env"]["torch"],
                    "git_sha": latest["env"]["git_sha"],
                    "schema_version": latest["schema_version"],
                    "duration_s": latest["duration_s"],
                    "error": run.failed["error"] if run.failed else None,
                    "stale": list(run.stale),
                }
            out.append({"slug": slug, "primary": slug == self.primary, "host": hr.host, "env": hr.env,
                        "r": {n: run.good["data"] for n, run in hr.runs.items() if run.ok}, "runs": runs})
        return out

    def context(self, page_uri: str, page_url: str, view: ResultsView) -> dict[str, Any]:
        pr = self.primary_results

        def figure(experiment: str, name: str | None = None, caption: str = "") -> Markup:
            data = view[experiment]
            svg = figures.render(experiment, data, name)
            slot = f"hb-figure-{next(self._ids)}"
            cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
            self._figures[slot] = f'<figure class="hb-figure">{svg}{cap}</figure>'
            return Markup(f'\n\n<div class="hb-slot" id="{slot}"></div>\n\n')

        def notebook(experiment: str) -> Markup:
            if experiment not in self.known:
                raise ValueError(f"notebook(): no experiment named {experiment!r}")
            rel = os.path.relpath(f"experiments/{experiment}.py", os.path.dirname(page_uri) or ".")
            depth = page_url.count("/")  # use_directory_urls: "a/b/" is two folders below the site root
            ipynb = "../" * depth + f"experiments/{experiment}/{experiment}.ipynb"
            return Markup(f"[`experiments/{experiment}.py` as a notebook page]({rel}), or "
                          f'<a href="{ipynb}" download>download it as `{experiment}.ipynb`</a> and rerun it in '
                          f"Jupyter; from a shell: `python -m experiments.{experiment} --profile quick`.")

        parts = sorted(str(p.relative_to(self.docs_dir)) for p in (self.docs_dir / "_cheatsheet").glob("*.md"))
        return {
            "r": view,
            "host": pr.host if pr else {},
            "env": pr.env if pr else {},
            "hosts": self.hosts_context(),
            "current_schema": envelope.SCHEMA_VERSION,
            "figure": figure,
            "notebook": notebook,
            "source": function_source,
            "cheatsheet_parts": parts,
        }

    # ------------------------------------------------------------------ pages
    def page_markdown(self, markdown: str, page) -> str:
        uri = page.file.src_uri
        view = ResultsView(self.primary_results, self.known)

        def unavailable(exc: ExperimentUnavailable) -> str:
            title = next((ln for ln in markdown.splitlines() if ln.startswith("# ")), f"# {page.title or uri}")
            detail = f"\n\n```text\n{exc.detail}\n```\n" if exc.detail else "\n"
            return (f"{title}\n\n!!! failure \"No result for `{exc.name}` on this host\"\n"
                    f"    This page needs the experiment `{exc.name}`, but {escape(exc.reason)}; it shows no "
                    f"numbers until the experiment runs again.{detail}")

        text = render_page(self.env, markdown, f"docs/{uri}", self.context(uri, page.url, view), unavailable)
        if view.used:
            compact = (page.meta or {}).get("provenance") == "compact"
            text = self.flags(view.used) + text + self.provenance(view.used, compact)
        return text

    def flags(self, used: set[str]) -> str:
        pr = self.primary_results
        notes = [(name, why) for name in sorted(used) for why in pr.runs[name].stale]
        if not notes:
            return ""
        items = "\n".join(f"    - `{name}`: {escape(why)}" for name, why in notes)
        return f"!!! warning \"Some results on this page are not current\"\n{items}\n\n"

    def provenance(self, used: set[str], compact: bool = False) -> str:
        pr = self.primary_results
        h = pr.host
        head = (f"**Measured on** {escape(h['device'])} · {h['cores']} cores · "
                f"{h['device_memory_bytes'] / 2**30:.0f} GiB device memory · host `{escape(h['slug'])}`")
        if compact:  # one paragraph, for the printed cheat sheet
            envs = [pr.runs[name].good for name in sorted(used)]
            torches = ", ".join(sorted({escape(e["env"]["torch"]) for e in envs}))
            commits = ", ".join(sorted({escape(e["env"]["git_sha"] or "unknown") for e in envs}))
            dates = sorted(e["started_at"] for e in envs)
            runs = "; ".join(f"`{name}` {escape(pr.runs[name].good['profile'])} {pr.runs[name].good['started_at'][:10]}"
                             for name in sorted(used))
            return (f"\n\n<div class=\"hb-provenance\" markdown>\n\n{head} · torch {torches} · commit {commits} · "
                    f"measured {escape(dates[0])} to {escape(dates[-1])} UTC. Results: {runs}.\n\n</div>\n")
        rows = []
        for name in sorted(used):
            e = pr.runs[name].good
            rows.append(f"| `{name}` | {escape(e['profile'])} | {escape(e['env']['torch'])} | "
                        f"{escape(e['env']['python'])} | {escape(e['started_at'])} | "
                        f"{escape(e['env']['git_sha'] or 'unknown')} | {e['duration_s']:.1f} s |")
        return (
            "\n\n---\n\n<div class=\"hb-provenance\" markdown>\n\n"
            f"{head}\n\n"
            "| experiment | profile | torch | python | measured (UTC) | commit | run time |\n"
            "|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n</div>\n"
        )

    def page_content(self, page_html: str, page) -> str:
        _plain_math_in_toc(page.toc)
        if "arithmatex" in page_html:
            if self._katex is None:
                self._katex = Katex()
            page_html = self._katex.render_html(page_html)
        for slot in [s for s in self._figures if s in page_html]:
            page_html = page_html.replace(f'<div class="hb-slot" id="{slot}"></div>', self._figures.pop(slot))
        meta = page.meta or {}
        if page.file.src_uri.endswith(".md") and meta.get("print", True):
            self.printed[page.file.src_uri] = PrintedPage(page.title or page.file.src_uri, page.file.src_uri,
                                                          page_html)
        return page_html

    # ------------------------------------------------------------------ after the build
    def post_build(self, site_dir: Path) -> None:
        from generator.site.printing import write_handbook_html, write_notebooks

        order = [u for u in self.nav_order if u in self.printed] + \
            sorted(u for u in self.printed if u not in self.nav_order)
        write_handbook_html(site_dir, [self.printed[u] for u in order], self.primary_results)
        write_notebooks(site_dir, EXPERIMENTS)
