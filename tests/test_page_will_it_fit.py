"""Chapters "Will it fit?" and "Named models" and their cheat-sheet part render this host's numbers:
a mini site built with ``--strict`` from canned results of tiny runs of sharding and named_models."""
from __future__ import annotations

import pytest

from conftest import build_chapter_site, site_text, test_profile_data
from experiments import activation_memory, named_models, sharding
from generator.site.formatting import bytes_, grouped, ratio
from test_exp_sharding import two_ranks

PAGES = ("07-will-it-fit.md", "08-named-models.md", "calculator.md")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("will_it_fit")
    data = {"sharding": two_ranks(), "named_models": test_profile_data("named_models"),
            "activation_memory": test_profile_data("activation_memory")}  # autocast's weight copies
    out = build_chapter_site(root, data, PAGES, ("_cheatsheet/07-will-it-fit.md",), ("assets/calculator.js",),
                             stubs={"03-activations.md": "# Activations\n", "10-parallelism.md": "# Parallelism\n",
                                    "11-fine-tuning.md": "# Fine-tuning\n"})
    summary = {"sharding": sharding.summarize(data["sharding"]), "named_models": named_models.summarize(data["named_models"]),
               "activation_memory": activation_memory.summarize(data["activation_memory"])}
    return out, data, summary


def test_will_it_fit_page(site) -> None:
    out, _, summary = site
    text = site_text(out, "07-will-it-fit/index.html")
    s = summary["sharding"]
    z1, f3 = s["top"]["zero1"], s["top"]["fsdp2_reshard"]
    for expected in (bytes_(s["ddp_state_bytes"]), bytes_(f3["state_max_bytes"]),
                     ratio(z1["optimizer_rank_spread_ratio"]), grouped(z1["ranks"][0]["owned_params"]),
                     bytes_(z1["ranks"][1]["optimizer_bytes"]), bytes_(f3["ranks"][0]["params_after_forward_bytes"]),
                     grouped(s["parameters"]), bytes_(z1["predicted_per_rank"]["optimizer_bytes"]),
                     "ZeroRedundancyOptimizer (ZeRO-1)"):
        assert expected in text, expected
    assert "<svg" in (out / "07-will-it-fit" / "index.html").read_text(encoding="utf-8")
    # the ZeRO paper's figure 1 case, the paper's figure beside the estimator's, in 10^9 bytes
    zp = summary["named_models"]["zero_paper"]
    assert zp["all_match"]
    flat = " ".join(text.split())
    for x in zp["stages"].values():
        assert f"{x['paper_gb']} GB {x['estimator_gb']} GB {grouped(x['estimator_bytes'])}" in flat
    for words in ("bf16-master", "fsdp2-bf16", "end of forward", "worst point of backward", "2^{-8}"):
        assert words in flat or words in (out / "07-will-it-fit" / "index.html").read_text(encoding="utf-8"), words


def test_named_models_page(site) -> None:
    out, data, summary = site
    text = site_text(out, "08-named-models/index.html")
    n = summary["named_models"]
    for m in n["models"].values():
        assert grouped(m["parameters"]) in text
        for x in m["setups"].values():
            assert bytes_(x["per_device_bytes"]["total"]) in text and bytes_(x["peak_bytes"]) in text
            assert x["peak_phase_label"] in text
    for g in n["gpus"]:
        assert g["source"] in text and f"{grouped(g['capacity_mib'])} MiB" in text
    assert "40,960 MiB" in text and bytes_(n["headroom_bytes"]) in text and n["leaves_out"] in text
    # beyond data parallel and full training: each row's per-rank peak and trainable count
    for x in n["beyond"].values():
        assert x["label"] in text and bytes_(x["peak_bytes"]) in text and grouped(x["trainable_parameters"]) in text
    assert bytes_(n["beyond"]["offload"]["host_bytes"]) in text
    v = n["validation"]["none"]["terms"]
    assert bytes_(v["optimizer"]["measured_bytes"]) in text and ratio(v["activations"]["ratio"], 4) in text
    assert "bf16 autocast activations after forward" in " ".join(text.split())  # labels from the summary
    cache = summary["activation_memory"]["autocast_weight_cache"]
    assert f"{bytes_(cache['bytes'])} for one layer's {grouped(cache['weights'])} matrix weights" in " ".join(text.split())
    assert f"vocabulary {data['named_models']['shape']['vocab']}" in text


def test_cheatsheet_part(site) -> None:
    out, _, summary = site
    text = site_text(out, "cheatsheet/index.html")
    l7 = summary["named_models"]["models"]["llama-2-7b"]
    assert "Will it fit?" in text and bytes_(l7["setups"]["zero3"]["peak_bytes"]) in text
    assert ratio(summary["sharding"]["top"]["zero1"]["state_vs_ddp_ratio"]) in text


def test_calculator_page_embeds_python_constants(site) -> None:
    out, _, _ = site
    html = (out / "calculator" / "index.html").read_text(encoding="utf-8")
    assert 'id="hb-calc-data"' in html and "calculator.js" in html
    assert "cdn" not in html.lower().split("hb-calc-data")[1]
