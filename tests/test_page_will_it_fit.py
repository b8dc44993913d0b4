"""Chapters "Will it fit?" and "Named models" and their cheat-sheet part render this host's numbers:
a mini site built with ``--strict`` from canned results of tiny runs of sharding and named_models."""
from __future__ import annotations

import pytest

from conftest import build_chapter_site, site_text
from experiments import named_models, sharding
from generator.site.formatting import bytes_, grouped, ratio

TINY_SHARDING = sharding.Config(width=32, inputs=8, outputs=3, batch=4, world_sizes=(2,))
TINY_NAMED = named_models.Config(vocab=64, v_seq=32, v_batch=2, layers=1, hidden=32, heads=4)
PAGES = ("07-will-it-fit.md", "08-named-models.md", "calculator.md")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("will_it_fit")
    data = {"sharding": sharding.run(TINY_SHARDING, "cpu"), "named_models": named_models.run(TINY_NAMED, "cpu")}
    out = build_chapter_site(root, data, PAGES, ("_cheatsheet/07-will-it-fit.md",), ("assets/calculator.js",))
    return out, data


def test_will_it_fit_page(site) -> None:
    out, data = site
    text = site_text(out, "07-will-it-fit/index.html")
    s = data["sharding"]
    z1 = next(r for r in s["runs"] if r["mode"] == "zero1" and r["world_size"] == 2)
    f3 = next(r for r in s["runs"] if r["mode"] == "fsdp2_reshard" and r["world_size"] == 2)
    for expected in (bytes_(s["summary"]["ddp_state_bytes"]),
                     bytes_(s["summary"]["modes"]["fsdp2_reshard"]["state_max_bytes"]),
                     ratio(z1["optimizer_rank_spread_ratio"]), grouped(z1["ranks"][0]["owned_params"]),
                     bytes_(z1["ranks"][1]["optimizer_bytes"]), bytes_(f3["ranks"][0]["params_after_forward_bytes"]),
                     grouped(s["parameters"])):
        assert expected in text, expected
    assert "<svg" in (out / "07-will-it-fit" / "index.html").read_text(encoding="utf-8")


def test_named_models_page(site) -> None:
    out, data = site
    text = site_text(out, "08-named-models/index.html")
    n = data["named_models"]
    for m in n["models"]:
        assert grouped(m["parameters"]) in text
        for key in m["setup_order"]:
            assert bytes_(m["setups"][key]["per_device_bytes"]["total"]) in text
    for g in n["calculator"]["gpus"]:
        assert g["source"] in text
    v = n["validation"]["none"]["terms"]
    assert bytes_(v["optimizer"]["measured_bytes"]) in text and ratio(v["activations"]["ratio"], 4) in text


def test_cheatsheet_part(site) -> None:
    out, data = site
    text = site_text(out, "cheatsheet/index.html")
    l7 = next(m for m in data["named_models"]["models"] if m["name"] == "llama-2-7b")
    assert "Will it fit?" in text and bytes_(l7["setups"]["zero3"]["per_device_bytes"]["total"]) in text
    assert ratio(data["sharding"]["summary"]["modes"]["zero1"]["state_vs_ddp_ratio"]) in text


def test_calculator_page_embeds_python_constants(site) -> None:
    out, data = site
    html = (out / "calculator" / "index.html").read_text(encoding="utf-8")
    assert 'id="hb-calc-data"' in html and "calculator.js" in html
    assert "cdn" not in html.lower().split("hb-calc-data")[1]
