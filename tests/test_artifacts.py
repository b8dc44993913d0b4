"""Files an experiment keeps beside its result: written by the child, landed with the result, kept on a
failure, archived by the GPU plan, linked and copied by the site (generator/runner.py, experiments/lib/artifacts.py).

The toy experiment is torch-free and writes a small file on the CPU; the real user is memory_timeline's CUDA
snapshot, which needs a GPU.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from conftest import build_site, fake_project
from generator import envelope, gpu_plan, runner
from generator.errors import RunError

REPO = Path(__file__).resolve().parent.parent

TOY = '''
"""A toy experiment that keeps a file beside its result (mode from HB_TOY_MODE)."""
import os
from dataclasses import dataclass
from pathlib import Path

from experiments.lib import artifacts


@dataclass(frozen=True)
class Config:
    size: int = 3


PROFILES = {"test": Config(1), "quick": Config(3), "full": Config(5)}
TIMEOUT_S = 60


def run(cfg, device):
    mode = os.environ.get("HB_TOY_MODE", "ok")
    payload = (mode * cfg.size).encode()
    if mode == "none":
        return {"file": None, "bytes": 0}
    if mode == "folder":  # something that is not a plain file
        (artifacts.folder() / "sub").mkdir()
    name = artifacts.write("toy.bin", payload)
    if mode == "raise":
        raise RuntimeError("deliberate failure after writing a file")
    return {"file": name, "bytes": len(payload)}


def summarize(data):
    return {"has_file": data["file"] is not None}


def plot(data, summary):
    raise NotImplementedError


if __name__ == "__main__":
    import sys
    from experiments.lib.cli import main
    raise SystemExit(main(sys.modules[__name__]))
'''


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return fake_project(tmp_path, {"toy": TOY})


def plan() -> runner.Plan:
    """The host as ``describe`` reports it, written out: the toy needs no torch, so neither does its plan."""
    return runner.Plan(
        device="cpu",
        host={"slug": "toy-host", "device": "cpu", "device_memory_bytes": 2**30, "cpu": "toy", "cores": 1},
        env={"python": "3", "torch": "none", "cuda": None, "git_sha": None},
        experiments={"toy": {"profiles": {"test": {"size": 1}, "quick": {"size": 3}, "full": {"size": 5}},
                             "timeout_s": 60, "error": None}})


def run_toy(results: Path, root: Path, monkeypatch, mode: str = "ok", force: bool = True) -> runner.Outcome:
    monkeypatch.setenv("HB_TOY_MODE", mode)
    return runner.run(results_dir=results, root=root, plain=True, force=force, described=plan())[0]


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_file_lands_beside_its_result_and_goes_with_it(root: Path, tmp_path: Path, monkeypatch) -> None:
    results = tmp_path / "results"
    out = run_toy(results, root, monkeypatch)
    assert out.state == "ok"
    env = envelope.load(out.path)
    folder = runner.artifacts_dir(results, out.path.parent.name, "toy")
    assert folder == out.path.with_name("toy.files") and (folder / "toy.bin").read_bytes() == b"okokok"
    assert env["data"] == {"file": "toy.bin", "bytes": 6}
    assert env["artifacts"] == {"toy.bin": {"bytes": 6, "sha256": hashlib.sha256(b"okokok").hexdigest()}}
    assert hidden(out.path.parent) == [], "no staging folder is left behind"

    # a cached result is reused while its file matches what it lists, and rerun when the file is gone
    assert run_toy(results, root, monkeypatch, force=False).state == "cached"
    (folder / "toy.bin").write_bytes(b"tampered")
    assert run_toy(results, root, monkeypatch, force=False).state == "ok"
    assert (folder / "toy.bin").read_bytes() == b"okokok"

    # a good run that keeps no file takes the old files away with the old result
    assert run_toy(results, root, monkeypatch, mode="none").state == "ok"
    assert not folder.exists() and "artifacts" not in envelope.load(out.path)


@pytest.mark.parametrize("mode, message", [
    ("raise", "deliberate failure after writing a file"),
    ("folder", "wrote 'sub' into its artifacts folder, which is not a plain file"),
])
def test_a_failed_run_keeps_the_previous_files(root: Path, tmp_path: Path, monkeypatch, mode: str,
                                              message: str) -> None:
    results = tmp_path / "results"
    good = run_toy(results, root, monkeypatch).path
    before = good.read_bytes()
    out = run_toy(results, root, monkeypatch, mode=mode)
    assert out.state == "failed" and message in out.error
    assert good.read_bytes() == before
    assert (good.with_name("toy.files") / "toy.bin").read_bytes() == b"okokok"
    assert sorted(p.name for p in good.with_name("toy.files").iterdir()) == ["toy.bin"]
    assert hidden(good.parent) == []


def test_a_swap_cut_short_is_recovered(root: Path, tmp_path: Path, monkeypatch) -> None:
    """A runner killed between moving the old files aside and writing the result: the next run puts them back."""
    results = tmp_path / "results"
    good = run_toy(results, root, monkeypatch).path
    folder = good.with_name("toy.files")
    os.replace(folder, good.with_name(".toy.files.old-999"))
    (good.parent / ".toy.files.new-998").mkdir()
    runner._recover_artifacts(folder)
    assert (folder / "toy.bin").read_bytes() == b"okokok" and hidden(good.parent) == []
    assert runner.artifacts_problem(good, envelope.load(good)) is None


def test_bad_artifact_lists_and_names_are_refused(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "x.json"
    for bad in ([1], {"../up": {"bytes": 1, "sha256": "0"}}, {"a": {"bytes": "1", "sha256": "0"}}):
        assert "field 'artifacts' should map plain file names" in runner.artifacts_problem(path, {"artifacts": bad})
    assert runner.artifacts_problem(path, {"artifacts": {"a.bin": {"bytes": 1, "sha256": "0"}}}) == \
        f"{tmp_path / 'x.files' / 'a.bin'}: missing (listed in x.json's field 'artifacts')"

    from experiments.lib import artifacts

    monkeypatch.delenv(artifacts.ENV, raising=False)
    assert artifacts.write("fine.bin", b"x") is None, "without a folder a run keeps no files"
    monkeypatch.setenv(artifacts.ENV, str(tmp_path))
    for name in ("../x", ".hidden", "a/b", ""):
        with pytest.raises(ValueError, match="artifact name"):
            artifacts.write(name, b"x")
    assert artifacts.write("fine.bin", b"x") == "fine.bin" and (tmp_path / "fine.bin").read_bytes() == b"x"


def test_by_hand_the_cli_keeps_files_in_the_folder_it_is_given(root: Path, tmp_path: Path) -> None:
    keep = tmp_path / "keep"
    keep.mkdir()
    env = dict(os.environ, PYTHONPATH=str(root))
    env.pop("HANDBOOK_ARTIFACTS", None)
    proc = subprocess.run([sys.executable, "-m", "experiments.toy", "--profile", "test", "--device", "cpu",
                           "--artifacts", str(keep)], cwd=root, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["file"] == "toy.bin" and (keep / "toy.bin").read_bytes() == b"ok"


def test_the_gpu_plans_archive_carries_the_files(root: Path, tmp_path: Path, monkeypatch) -> None:
    results = tmp_path / "results"
    good = run_toy(results, root, monkeypatch).path
    slug = good.parent.name
    archive = tmp_path / "results.tgz"
    archive.write_bytes(gpu_plan.archive_bytes(results, slug, {gpu_plan.LOG: b"log\n"}))
    got_slug, got, _log = gpu_plan.read_archive(archive)
    assert got_slug == slug and sorted(got) == ["toy.json"]
    with tarfile.open(archive) as tar:
        assert tar.extractfile(f"results/{slug}/toy.files/toy.bin").read() == b"okokok"
    # anything else under the host's folder is still refused
    with tarfile.open(tmp_path / "bad.tgz", "w:gz") as tar:
        tar.add(good, arcname=f"results/{slug}/toy.json")
        tar.add(good, arcname=f"results/{slug}/elsewhere/toy.json")
        info = tarfile.TarInfo(gpu_plan.LOG)
        tar.addfile(info)
    with pytest.raises(RunError, match="unexpected member 'results/.*/elsewhere/toy.json'"):
        gpu_plan.read_archive(tmp_path / "bad.tgz")


PAGE = """# Toy

{% set d = r.toy %}<a download href="{{ artifact_url('toy', d.file) }}">{{ d.file }}</a> ({{ d.bytes }} bytes)
"""


def test_the_site_links_and_copies_a_linked_file(root: Path, tmp_path: Path, monkeypatch) -> None:
    results = tmp_path / "results"
    good = run_toy(results, root, monkeypatch).path
    toys = {"toy": TOY}
    proc = build_site(tmp_path / "a", results, docs={"index.md": "# Home\n", "toy.md": PAGE}, experiments=toys)
    assert proc.returncode == 0, proc.stderr[-2000:]
    site = tmp_path / "a" / "site"
    html = (site / "toy" / "index.html").read_text(encoding="utf-8")
    href = f"../files/{good.parent.name}/toy/toy.bin"
    assert f'<a download href="{href}">toy.bin</a>' in html
    assert (site / "toy" / href).resolve().read_bytes() == b"okokok"

    # a file that does not match its result fails the build, naming the file
    (good.with_name("toy.files") / "toy.bin").write_bytes(b"changed")
    proc = build_site(tmp_path / "b", results, docs={"index.md": "# Home\n", "toy.md": PAGE}, experiments=toys)
    assert proc.returncode != 0
    assert "artifact_url('toy', 'toy.bin')" in proc.stderr and "toy.files/toy.bin: does not match" in proc.stderr
