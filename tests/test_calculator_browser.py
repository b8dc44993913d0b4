"""The calculator page in headless Chromium: it must give exactly what ``handbook estimate`` gives.

A mini site holds the calculator page and its script, and no result at all: the page reads the shapes,
precisions and card capacities from the estimator at build time (``estimator.calculator_inputs``), so it
works before anything was measured. The Python estimator generates the test vectors; Playwright fills the
form for each and reads every number back.
"""
from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from pathlib import Path

import pytest

from conftest import REPO, build_site
from experiments.lib import estimator
from experiments.lib.model_shapes import BUILTIN
from generator.estimate import main as estimate_main

playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = Path("/usr/bin/chromium")

# (model or typed shape, set-up): every built-in, every optimizer, precision, checkpointing and ZeRO stage.
VECTORS = [
    ("bert-base", dict(optimizer="adamw", precision="fp32", batch=8, seq=512, checkpointing="none", zero=0, gpus=1)),
    ("gpt2-xl", dict(optimizer="sgd", precision="bf16", batch=4, seq=1024, checkpointing="selective", zero=1, gpus=2)),
    ("gpt2-xl", dict(optimizer="adafactor", precision="fp16-mixed", batch=1, seq=777, checkpointing="full", zero=0,
                     gpus=1)),
    ("llama-2-7b", dict(optimizer="adamw", precision="bf16-mixed", batch=1, seq=4096, checkpointing="full", zero=3,
                        gpus=8)),
    ("llama-2-70b", dict(optimizer="adamw-8bit", precision="bf16", batch=2, seq=4096, checkpointing="selective",
                         zero=2, gpus=64)),
    ("llama-3-8b", dict(optimizer="adam-amsgrad", precision="fp32", batch=3, seq=8192, checkpointing="none", zero=1,
                        gpus=7)),
    ("llama-3-8b", dict(optimizer="sgd-momentum", precision="bf16-mixed", batch=16, seq=2048, checkpointing="full",
                        zero=3, gpus=3)),
    ({"family": "llama", "hidden": 512, "layers": 6, "heads": 8, "kv_heads": 2, "intermediate": 1376, "vocab": 32000,
      "untied": True},
     dict(optimizer="adam", precision="bf16", batch=4, seq=1024, checkpointing="none", zero=0, gpus=1)),
    ({"family": "gpt2", "hidden": 256, "layers": 4, "heads": 4, "kv_heads": 0, "intermediate": 0, "vocab": 5000,
      "untied": False},
     dict(optimizer="adafactor", precision="fp32", batch=2, seq=300, checkpointing="selective", zero=2, gpus=4)),
    ({"family": "bert", "hidden": 128, "layers": 2, "heads": 2, "kv_heads": 0, "intermediate": 300, "vocab": 999,
      "untied": False},
     dict(optimizer="adamw-8bit", precision="fp16-mixed", batch=5, seq=64, checkpointing="full", zero=1, gpus=2)),
]


def cli_argv(model, setup: dict) -> list[str]:
    argv = ["--json"] + [x for k, v in setup.items() for x in (f"--{k}", str(v))]
    if isinstance(model, str):
        return argv + ["--model", model]
    argv += ["--family", model["family"]]
    for key in ("hidden", "layers", "heads", "kv_heads", "intermediate", "vocab"):
        argv += [f"--{key.replace('_', '-')}", str(model[key])]
    return argv + (["--untied"] if model["untied"] else [])


def cli(argv: list[str], capsys) -> dict:
    assert estimate_main(argv) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    if not CHROMIUM.exists():
        pytest.fail("Chromium is not installed at /usr/bin/chromium ('make setup' installs it)")
    root = tmp_path_factory.mktemp("calculator")
    (root / "results").mkdir()
    docs = {"index.md": "# Mini\n", "calculator.md": (REPO / "docs" / "calculator.md").read_text(encoding="utf-8"),
            "07-will-it-fit.md": "# Will it fit?\n", "08-named-models.md": "# Named models\n"}
    out = root / "out"
    (out / "docs" / "assets").mkdir(parents=True)
    shutil.copy(REPO / "docs" / "assets" / "calculator.js", out / "docs" / "assets" / "calculator.js")
    proc = build_site(out, root / "results", docs=docs)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / "site"


@pytest.fixture(scope="module")
def page(site: Path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))

    class Quiet(http.server.ThreadingHTTPServer):
        def handle_error(self, request, client_address) -> None:  # a closed connection is not a failure
            pass

    http.server.SimpleHTTPRequestHandler.log_message = lambda *a, **k: None
    server = Quiet(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    errors, outside = [], []
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        pg = browser.new_page()
        pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.on("request", lambda r: outside.append(r.url) if not r.url.startswith(base) and
              not r.url.startswith("data:") else None)
        pg.goto(f"{base}/calculator/")
        pg.wait_for_selector("#hb-calc[data-ready=true]")
        yield pg, errors, outside
        browser.close()
    server.shutdown()


def fill(pg, model, setup: dict) -> None:
    if isinstance(model, str):
        pg.select_option("#hb-model", model)
    else:
        pg.select_option("#hb-model", "custom")
        pg.select_option("#hb-family", model["family"])
        for key in ("hidden", "layers", "heads", "kv_heads", "intermediate", "vocab"):
            pg.fill(f"#hb-{key.replace('_', '-')}", str(model[key]))
        pg.fill("#hb-positions", "0")
        pg.set_checked("#hb-untied", model["untied"])
    for key in ("optimizer", "precision", "checkpointing", "zero"):
        pg.select_option(f"#hb-{key}", str(setup[key]))
    for key in ("batch", "seq", "gpus"):
        pg.fill(f"#hb-{key}", str(setup[key]))


def read(pg) -> dict:
    return pg.evaluate("""() => ({
        parameters: document.getElementById('hb-parameters').dataset.value,
        per: Object.fromEntries(['params', 'grads', 'optimizer', 'activations', 'total'].map(
            k => [k, document.getElementById('hb-out-' + k).dataset.bytes])),
        fits: [...document.querySelectorAll('#hb-fits li')].map(li => [li.dataset.gpu, li.dataset.fits === 'true']),
        error: document.getElementById('hb-error').hidden ? '' : document.getElementById('hb-error').textContent,
    })""")


@pytest.mark.parametrize("i", range(len(VECTORS)))
def test_calculator_equals_cli(page, capsys, i: int) -> None:
    pg, errors, outside = page
    model, setup = VECTORS[i]
    want = cli(cli_argv(model, setup), capsys)
    fill(pg, model, setup)
    got = read(pg)
    assert got["error"] == ""
    assert int(got["parameters"]) == want["parameters"]
    assert {k: int(v) for k, v in got["per"].items()} == want["per_device_bytes"]
    assert got["fits"] == [[f["gpu"], f["fits"]] for f in want["fits"]]
    assert not errors and not outside


def test_vectors_cover_every_option() -> None:
    used = {k: {s[k] for _, s in VECTORS} for k in ("optimizer", "precision", "checkpointing", "zero")}
    assert used == {"optimizer": set(estimator.OPTIMIZERS), "precision": set(estimator.PRECISIONS),
                    "checkpointing": set(estimator.CHECKPOINTING), "zero": {0, 1, 2, 3}}
    assert {m for m, _ in VECTORS if isinstance(m, str)} == set(BUILTIN)
    assert {m["family"] for m, _ in VECTORS if isinstance(m, dict)} == {"gpt2", "bert", "llama"}


def test_calculator_reports_bad_input(page) -> None:
    pg, errors, _ = page
    fill(pg, "bert-base", dict(optimizer="adamw", precision="fp32", batch=1, seq=1024, checkpointing="none", zero=0,
                               gpus=1))
    got = read(pg)
    with pytest.raises(estimator.EstimateError) as exc:
        estimator.estimate(estimator.Setup(seq=1024), shape=BUILTIN["bert-base"])
    assert got["error"] == str(exc.value)
    pg.fill("#hb-batch", "-3")
    assert "batch must be a positive integer" in read(pg)["error"]
    assert not errors


def test_default_model_matches_cli_defaults(page, capsys) -> None:
    """Freshly loaded, the page shows Llama-2 7B with the CLI's defaults (adamw, bf16-mixed, batch 1, seq 1024)."""
    pg, errors, outside = page
    want = cli(["--model", "llama-2-7b", "--json"], capsys)
    pg.reload()
    pg.wait_for_selector("#hb-calc[data-ready=true]")
    got = read(pg)
    assert {k: int(v) for k, v in got["per"].items()} == want["per_device_bytes"]
    assert int(got["parameters"]) == want["parameters"]
    assert not errors and not outside
