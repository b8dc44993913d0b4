"""All hosts' results, loaded and checked, and the primary host the prose uses.

A result whose schema is older than the current one, or that was measured
with another torch version than the rest of its host's results, is kept but
flagged (``stale``), so a page can say so instead of mixing silently.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from generator import envelope
from generator.runner import THIS_HOST_FILE


@dataclass
class Run:
    """The latest state of one experiment on one host."""

    name: str
    good: dict | None  # the last ok envelope
    failed: dict | None  # a failed envelope newer than the good one (or with no good one)
    stale: list[str] = field(default_factory=list)
    summary: dict | None = None  # what summarize() derived from ``good``'s data, at build time

    @property
    def ok(self) -> bool:
        return self.good is not None


@dataclass
class HostResults:
    slug: str
    runs: dict[str, Run]

    @property
    def newest(self) -> dict | None:
        envs = [r.good for r in self.runs.values() if r.good]
        return max(envs, key=lambda e: e["started_at"]) if envs else None

    @property
    def host(self) -> dict:
        env = self.newest or next(r.failed for r in self.runs.values() if r.failed)
        return env["host"]

    @property
    def env(self) -> dict:
        env = self.newest or next(r.failed for r in self.runs.values() if r.failed)
        return env["env"]


def load_host(folder: Path) -> HostResults:
    runs: dict[str, Run] = {}
    for path in sorted(folder.glob("*.json")):
        if path.name.startswith("."):
            continue
        obj = envelope.load(path)  # raises ResultError naming the file and field
        failed = path.name.endswith(".failed.json")
        name = path.name[: -len(".failed.json")] if failed else path.stem
        if obj["host"]["slug"] != folder.name:
            raise envelope.ResultError(f"{path}: field 'host.slug' is {obj['host']['slug']!r}, but the folder is "
                                       f"named for host {folder.name!r}")
        if obj["experiment"] != name:
            raise envelope.ResultError(f"{path}: field 'experiment' is {obj['experiment']!r}, but the file is "
                                       f"named for {name!r}")
        run = runs.setdefault(name, Run(name, None, None))
        if failed:
            run.failed = obj
        else:
            run.good = obj
    for run in runs.values():
        if run.failed and run.good and run.failed["started_at"] < run.good["started_at"]:
            run.failed = None
    _flag_stale(runs)
    return HostResults(folder.name, runs)


def _flag_stale(runs: dict[str, Run]) -> None:
    torches = Counter(r.good["env"]["torch"] for r in runs.values() if r.good)
    usual = torches.most_common(1)[0][0] if torches else None
    for run in runs.values():
        if run.good is None:
            continue
        if run.good["schema_version"] != envelope.SCHEMA_VERSION:
            run.stale.append(f"schema {run.good['schema_version']} (current {envelope.SCHEMA_VERSION})")
        if usual and run.good["env"]["torch"] != usual:
            run.stale.append(f"torch {run.good['env']['torch']} (this host's other results: {usual})")
        if run.failed:
            run.stale.append(f"the latest run ({run.failed['started_at']}) failed; showing the previous result")


def attach_summaries(hosts: dict[str, HostResults], results_dir: Path) -> None:
    """Every good result's summary, derived now from its stored data (a failure names host and field)."""
    from generator.site.summaries import summarize

    for slug, hr in hosts.items():
        for name, run in hr.runs.items():
            if run.ok:
                where = str(envelope.result_path(results_dir, slug, name))
                run.summary = summarize(name, run.good["data"], where)


def load_all(results_dir: Path) -> dict[str, HostResults]:
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        return {}
    hosts = {}
    for folder in sorted(p for p in results_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        loaded = load_host(folder)
        if loaded.runs:
            hosts[folder.name] = loaded
    return hosts


def pick_primary(hosts: dict[str, HostResults], results_dir: Path, wanted: str | None) -> str | None:
    """The host the prose uses: ``wanted``, else this machine's, else the one with most results.

    Among hosts with as many results, an accelerator host (slug ``cuda-...``) wins: a clone
    that has not run anything yet (the published site's build) then writes from the reference
    GPU results rather than from a CPU's.
    """
    if wanted:
        if wanted not in hosts:
            raise envelope.ResultError(f"{results_dir}: no results for host {wanted!r} "
                                       f"(have: {', '.join(hosts) or 'none'})")
        return wanted
    marker = Path(results_dir) / THIS_HOST_FILE
    if marker.exists():
        this = marker.read_text(encoding="utf-8").strip()
        if this in hosts:
            return this
    if not hosts:
        return None
    return sorted(hosts, key=lambda s: (-sum(r.ok for r in hosts[s].runs.values()), not s.startswith("cuda-"), s))[0]
