"""The command line: every command explains itself."""
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("args, expect", [
    ([], "run (cached), then build the site"),
    (["run"], "--only NAME"),
    (["build"], "--no-run"),
    (["serve"], "pages rebuild when docs or results change"),
])
def test_help(args: list[str], expect: str) -> None:
    out = subprocess.run([sys.executable, "-m", "generator", *args, "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and expect in " ".join(out.stdout.split())


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "handbook"
    assert script.exists(), "pip install -e . provides the handbook command"
