"""One error family: every user-facing failure is a HandbookError, printed as one line by one handler."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_envelope, write_result
from generator import cli, errors
from generator.envelope import ResultError

REPO = Path(__file__).resolve().parent.parent


def test_every_user_facing_error_is_a_handbook_error() -> None:
    from generator.estimate import _InputError
    from generator.pdf import PdfError
    from generator.runner import RunError
    from generator.site.figures import FigureError
    from generator.site.render import PageError
    from generator.site.summaries import SummaryError

    for cls in (ResultError, RunError, PageError, FigureError, SummaryError, PdfError, _InputError):
        assert issubclass(cls, errors.HandbookError), cls


def test_the_cli_prints_one_line_and_exits_non_zero(tmp_path: Path, capsys, monkeypatch) -> None:
    def fail(args):
        raise ResultError("results/x/y.json: field 'data.z' is missing")

    monkeypatch.setattr(cli, "dispatch", fail)
    assert cli.main(["run"]) == 2
    err = capsys.readouterr().err
    assert err == "handbook: run: results/x/y.json: field 'data.z' is missing\n"


def test_a_bad_result_fails_the_build_in_one_line(tmp_path: Path) -> None:
    results = tmp_path / "results"
    bad = write_result(results, make_envelope("optimizer_state", {"x": 1}))
    bad.write_bytes(b"\x00\xff garbage")
    proc = subprocess.run([sys.executable, "-m", "generator", "build", "--no-run", "--no-pdf", "--results",
                           str(results), "--site-dir", str(tmp_path / "site")], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if str(bad) in ln]
    assert lines and lines[0].startswith("handbook: build"), proc.stderr[-2000:]


@pytest.mark.parametrize("name", ["weight_decay"])
def test_experiment_help_names_the_experiment(name: str) -> None:
    proc = subprocess.run([sys.executable, "-m", f"experiments.{name}", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0
    assert proc.stdout.startswith(f"usage: python -m experiments.{name} ")
    assert "__main__" not in proc.stdout
