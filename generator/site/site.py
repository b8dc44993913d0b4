"""The state of one site build, with one job per method.

- ``__post_init__``: load every host's results and derive their summaries.
- ``page_markdown``: render a page's Jinja over the results, add its notices and provenance.
- ``page_content``: render math, put the figures in, keep the page for the print edition.
- ``post_build``: write the print page of the handbook and the notebooks, and copy the result files
  (artifacts) that pages link into the site.
"""
from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from generator import envelope, runner
from generator.errors import PageError
from generator.site import macros
from generator.site.katex import Katex
from generator.site.render import ExperimentUnavailable, ResultsView, make_environment, render_page
from generator.site.results import HostResults, attach_summaries, load_all, pick_primary
from generator.site.summaries import experiments_dir

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
    linked: dict[str, Path] = field(default_factory=dict)  # site path -> a result's file that a page links
    _katex: Katex | None = None

    def __post_init__(self) -> None:
        self.docs_dir = Path(self.config.docs_dir)
        self.hosts = load_all(self.results_dir)
        self.primary = pick_primary(self.hosts, self.results_dir, self.wanted_host)
        attach_summaries(self.hosts, self.results_dir)
        self.env = make_environment(self.docs_dir)
        self.snippets = macros.snippets()
        self.figures = macros.Figures(self.snippets)
        self.experiments = experiments_dir()
        self.known = {p.stem for p in self.experiments.glob("*.py") if not p.name.startswith("_")}

    @property
    def primary_results(self) -> HostResults | None:
        return self.hosts.get(self.primary) if self.primary else None

    def hosts_context(self) -> list[dict]:
        """Every host, for the pages that set hosts side by side."""
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
            ok = {n: run for n, run in hr.runs.items() if run.ok}
            out.append({"slug": slug, "primary": slug == self.primary, "host": hr.host, "env": hr.env,
                        "r": {n: run.good["data"] for n, run in ok.items()},
                        "summary": {n: run.summary for n, run in ok.items()}, "runs": runs})
        return out

    def page_markdown(self, markdown: str, page) -> str:
        """The page's Markdown with the results in: notices first, provenance last."""
        uri = page.file.src_uri
        pr = self.primary_results
        data = ResultsView(pr, self.known)
        summary = ResultsView(pr, self.known, part="summary", used=data.used)
        parts = sorted(str(p.relative_to(self.docs_dir)) for p in (self.docs_dir / "_cheatsheet").glob("*.md"))
        context = macros.page_globals(
            page_uri=uri, page_url=page.url, data=data, summary=summary, hosts=self.hosts_context(),
            host=pr.host if pr else {}, env=pr.env if pr else {}, current_schema=envelope.SCHEMA_VERSION,
            known=self.known, figs=self.figures, snippet_env=self.snippets, cheatsheet_parts=parts)
        context["artifact_url"] = lambda experiment, name: self.artifact_url(uri, page.url, data, experiment, name)

        def unavailable(exc: ExperimentUnavailable) -> str:
            title = next((ln for ln in markdown.splitlines() if ln.startswith("# ")), f"# {page.title or uri}")
            return macros.render_snippet(self.snippets, "unavailable.md.j2", title=title, name=exc.name,
                                         reason=exc.reason, detail=exc.detail)

        text = render_page(self.env, markdown, f"docs/{uri}", context, unavailable)
        if data.used:
            compact = (page.meta or {}).get("provenance") == "compact"
            text = self.stale_notice(data.used) + text + self.provenance(data.used, compact)
        return text

    def artifact_url(self, page_uri: str, page_url: str, data: ResultsView, experiment: str, name: str) -> str:
        """The link, relative to the page, to a file the primary host's result of ``experiment`` keeps.

        The file must be listed in the result's ``artifacts`` field and match it; ``post_build`` copies
        it to ``files/<host>/<experiment>/<name>`` in the site. Nothing is fetched from elsewhere.
        """
        data[experiment]  # the page reads this result (provenance), or is replaced by its unavailable notice
        pr = self.primary_results
        env, where = pr.runs[experiment].good, f"docs/{page_uri}: artifact_url({experiment!r}, {name!r})"
        path = envelope.result_path(self.results_dir, pr.slug, experiment)
        listed = env.get("artifacts") or {}
        if not isinstance(name, str) or name not in listed:
            raise PageError(f"{where}: {path} lists no such file (it lists: {', '.join(sorted(listed)) or 'none'})")
        problem = runner.artifacts_problem(path, env)
        if problem:
            raise PageError(f"{where}: {problem}")
        rel = f"files/{pr.slug}/{experiment}/{name}"
        self.linked[rel] = runner.artifacts_dir(self.results_dir, pr.slug, experiment) / name
        return "../" * page_url.count("/") + rel  # use_directory_urls: "a/b/" is two folders below the root

    def stale_notice(self, used: set[str]) -> str:
        notes = [(name, why) for name in sorted(used) for why in self.primary_results.runs[name].stale]
        return macros.render_snippet(self.snippets, "stale.md.j2", notes=notes) + "\n" if notes else ""

    def provenance(self, used: set[str], compact: bool = False) -> str:
        pr = self.primary_results
        runs = [(name, pr.runs[name].good) for name in sorted(used)]
        return macros.provenance(self.snippets, pr.host, runs, compact)

    def page_content(self, page_html: str, page) -> str:
        """Math rendered, figures in; the page kept for the print edition."""
        _plain_math_in_toc(page.toc)
        if "arithmatex" in page_html:
            if self._katex is None:
                self._katex = Katex()
            page_html = self._katex.render_html(page_html)
        page_html = self.figures.fill(page_html)
        meta = page.meta or {}
        if page.file.src_uri.endswith(".md") and meta.get("print", True):
            self.printed[page.file.src_uri] = PrintedPage(page.title or page.file.src_uri, page.file.src_uri,
                                                          page_html)
        return page_html

    def post_build(self, site_dir: Path) -> None:
        """The print edition of the handbook, in nav order, and the notebooks."""
        from generator.site.printing import write_handbook_html, write_notebooks

        order = [u for u in self.nav_order if u in self.printed] + \
            sorted(u for u in self.printed if u not in self.nav_order)
        write_handbook_html(site_dir, [self.printed[u] for u in order], self.snippets,
                            macros.cover_values(self.primary_results))
        write_notebooks(site_dir, self.experiments)
        for rel, source in sorted(self.linked.items()):
            target = site_dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
