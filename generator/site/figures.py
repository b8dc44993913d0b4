"""Figures drawn from result data at build time, as inline SVG, cached by content.

An experiment's ``plot(data, summary)`` returns a matplotlib Figure or a dict of them.
The SVG is cached under ``.cache/figures`` keyed by the experiment's source,
the data and the matplotlib version, so an unchanged figure costs nothing on
a rebuild (and matplotlib is not even imported).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
from pathlib import Path

from generator.errors import FigureError

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "figures"
SVG_HEAD = re.compile(r"^.*?(?=<svg)", re.S)

RC = {
    "svg.fonttype": "none",       # text stays text: searchable, and found by pdftotext
    "svg.hashsalt": "handbook",   # deterministic element ids
    "font.family": "sans-serif",
    "font.size": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "figure.dpi": 100,
    "figure.facecolor": "white",
}


def _key(experiment: str, data: dict, summary: dict) -> str:
    import matplotlib  # noqa: F401 - only its version string, cheap relative to drawing

    from generator.site.summaries import experiments_dir

    src = (experiments_dir() / f"{experiment}.py").read_bytes()
    h = hashlib.sha256(src)
    h.update(json.dumps([data, summary], sort_keys=True).encode())
    h.update(matplotlib.__version__.encode())
    h.update(json.dumps(RC, sort_keys=True).encode())
    return h.hexdigest()[:24]


def _to_svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    return SVG_HEAD.sub("", buf.getvalue(), count=1)


def render(experiment: str, data: dict, summary: dict, name: str | None) -> str:
    """The SVG text of figure ``name`` (None: the experiment's only figure)."""
    key = _key(experiment, data, summary)
    path = CACHE / f"{experiment}-{key}-{name or 'main'}.svg"
    if path.exists():
        return path.read_text(encoding="utf-8")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from generator.site.summaries import load_experiment

    module = load_experiment(experiment)
    with matplotlib.rc_context(RC):
        try:
            made = module.plot(data, summary)
        except Exception as exc:  # noqa: BLE001 - a bug in plot(), reported where it happened
            plt.close("all")
            raise FigureError(f"experiments/{experiment}.py: plot() failed: {type(exc).__name__}: {exc}") from None
        figs = made if isinstance(made, dict) else {"main": made}
        CACHE.mkdir(parents=True, exist_ok=True)
        out = {}
        for fig_name, fig in figs.items():
            out[fig_name] = _to_svg(fig)
            plt.close(fig)
    for fig_name, svg in out.items():
        tmp = CACHE / f".{experiment}-{key}-{fig_name}.svg.{os.getpid()}.tmp"  # builds may run side by side
        tmp.write_text(svg, encoding="utf-8")
        tmp.replace(CACHE / f"{experiment}-{key}-{fig_name}.svg")
    wanted = name or "main"
    if wanted not in out:
        raise FigureError(f"experiments/{experiment}.py: plot() has no figure named {wanted!r} "
                          f"(it draws: {', '.join(sorted(out))})")
    return out[wanted]
