"""The truth pass of issue 16: each corrected fact, read from the built site within its own section.

A section is a heading (found by its id, or by the start of its text where the id carries host numbers)
and what follows it up to the next heading of the same or a higher level; a drill is the ``<details>``
block whose question holds the given words. Expected figures come from the committed results of the host
the site's prose uses, through the experiments' own ``summarize``.
"""
from __future__ import annotations

import functools
import json
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import REPO
from generator.site.formatting import bytes_, grouped, num, ratio, sci

HEADING = re.compile(r"h([1-6])$")


class _Events(HTMLParser):
    """The page as a flat list of events: ("start", tag, attrs), ("end", tag) and ("text", data)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.events: list[tuple] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.events.append(("start", tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        self.events.append(("end", tag))

    def handle_data(self, data: str) -> None:
        self.events.append(("text", data))


@functools.cache
def _events(path: Path) -> tuple:
    parser = _Events()
    parser.feed(path.read_text(encoding="utf-8"))
    return tuple(parser.events)


def _text(events) -> str:
    return " ".join(" ".join(e[1] for e in events if e[0] == "text").split())


def _heading_text(events: tuple, i: int) -> str:
    """The text of the heading that starts at event ``i``."""
    tag, out = events[i][1], []
    for e in events[i + 1:]:
        if e[0] == "end" and e[1] == tag:
            break
        if e[0] == "text":
            out.append(e[1])
    return " ".join("".join(out).split())


def section(site: Path, page: str, anchor: str, stop_level: int | None = None) -> str:
    """The visible text of the section that starts at the heading ``anchor`` (an id, or ``text:`` and the
    start of the heading's text), up to the next heading of level ``stop_level`` or higher (by default, the
    heading's own level)."""
    events = _events(site / page)
    start = level = None
    for i, e in enumerate(events):
        if e[0] != "start" or not HEADING.match(e[1]):
            continue
        found = (_heading_text(events, i).startswith(anchor[5:]) if anchor.startswith("text:")
                 else e[2].get("id") == anchor)
        if found:
            start, level = i, int(e[1][1])
            break
    assert start is not None, f"{page}: no heading {anchor!r}"
    stop = stop_level or level
    end = next((j for j in range(start + 1, len(events)) if events[j][0] == "start"
                and HEADING.match(events[j][1]) and int(events[j][1][1]) <= stop), len(events))
    return _text(events[start:end])


def drill(site: Path, page: str, question: str) -> str:
    """The visible text of the drill (a ``<details>`` block) whose question holds ``question``."""
    events = _events(site / page)
    depth, start = 0, None
    for i, e in enumerate(events):
        if e[0] == "start" and e[1] == "details":
            if depth == 0:
                start = i
            depth += 1
        elif e[0] == "end" and e[1] == "details" and depth:
            depth -= 1
            if depth == 0:
                text = _text(events[start:i])
                if question in text:
                    return text
    raise AssertionError(f"{page}: no drill asking {question!r}")


@functools.cache
def _primary() -> tuple[str, dict]:
    from generator.site.results import load_all, pick_primary

    hosts = load_all(REPO / "results")
    slug = pick_primary(hosts, Path("/nonexistent"), None)
    return slug, hosts[slug].runs


def data(name: str) -> dict:
    return _primary()[1][name].good["data"]


@functools.cache
def _summary(name: str) -> str:
    import importlib

    return json.dumps(importlib.import_module(f"experiments.{name}").summarize(data(name)))


def summary(name: str) -> dict:
    return json.loads(_summary(name))


CH1, CH2 = "01-where-the-memory-goes/index.html", "02-optimizer-semantics/index.html"
CH5, CH6 = "05-mixed-precision/index.html", "06-tight-budget/index.html"
HW, SHEET = "hardware/index.html", "cheatsheet/index.html"


# 1. Clipping before unscale_: what was measured is the gradient handed to the optimizer, not the update.
def test_clipping_before_unscale_names_the_gradient_not_the_update(built_site: Path) -> None:
    gas = summary("grad_accumulation")
    variant = gas["amp_scaler_variant"]
    s, x = gas["amp"][variant], data("grad_accumulation")["amp"][variant]
    text = section(built_site, CH2, "with-mixed-precision")
    assert f"the gradient handed to the optimizer had norm {sci(x['clip_before_unscale_norm'])}" in text
    assert f"{ratio(s['clip_before_unscale_shrink'])} smaller" in text
    assert "What was measured is the gradient, not the update" in text
    assert "the update is" not in text and "smaller than intended" not in text
    # the factor is the scale only because the right loop clips too: max_norm was half the gradient's norm
    assert s["correct_loop_clips"] and s["max_norm_over_grad_norm"] == pytest.approx(0.5, rel=1e-3)
    assert f"max_norm was set to {ratio(s['max_norm_over_grad_norm'])} the gradient's norm" in text
    answer = drill(built_site, CH2, "Where does gradient clipping go")
    assert "the gradient the optimizer received was" in answer and "making the update" not in answer
    assert ratio(s["max_norm_over_grad_norm"]) in answer


# 2. Tight budget, takeaway: the sparse update matches the full update; one run each is no ranking.
def test_sparse_update_takeaway_says_matches(built_site: Path) -> None:
    sps, sp = summary("sparse_update"), data("sparse_update")
    text = section(built_site, CH6, "training-under-a-tight-budget", stop_level=2)
    assert sps["largest_search_matches_full"]
    assert "matched the full update's accuracy" in text
    if sp["seeds"] == 1:
        assert "one run each, so a few test images either way are noise" in text
    assert f"against {sps['frontier']['full_update']['accuracy'] * 100:.1f} % with" not in text


# 4. Autocast's 16-bit weight copies, as the activations chapter measured them.
def test_autocast_weight_copies_on_chapter_1_and_its_cheat_sheet_part(built_site: Path) -> None:
    wc = summary("activation_memory")["autocast_weight_cache"]
    assert wc["bytes_per_weight"] == 2.0 and wc["dtype"] == "bfloat16" and wc["matrices"] >= 4
    text = section(built_site, CH1, "autocast-adds-a-16-bit-copy-of-the-weights")
    for expected in (bytes_(wc["bytes"]), grouped(wc["weights"]), f"{num(wc['bytes_per_weight'])} bytes per weight",
                     "keeps that copy for backward"):
        assert expected in text, expected
    assert "either way" not in text
    answer = drill(built_site, CH1, "Does mixed precision with autocast halve")
    assert f"{wc['dtype']} copy of every matmul weight" in answer
    card = section(built_site, SHEET, "text:Bytes per parameter")
    assert f"Autocast: + {num(wc['bytes_per_weight'])} B per matmul weight" in card


# 5. Pure bf16 at 8 bytes per parameter loses updates below about 2^-8 of the weight.
def test_pure_bf16_carries_its_caveat(built_site: Path) -> None:
    pure = summary("optimizer_state")["precision"]["pure-bf16"]["total_bytes_per_param"]
    text = section(built_site, CH1, "autocast-adds-a-16-bit-copy-of-the-weights")
    assert f"Pure bf16 is {num(pure)} bytes per parameter at a price" in text
    assert "smaller than about 2⁻⁸ of the weight" in text and "section 3.1" in text
    assert "2⁻⁸" in drill(built_site, CH1, "Does mixed precision with autocast halve")
    assert "updates below ≈ 2⁻⁸ of a weight are lost" in section(built_site, SHEET, "text:Bytes per parameter")


# 6. The QAS mismatch is a range across layers, not one layer's six-figure number.
def test_qas_mismatch_is_a_range_across_layers(built_site: Path) -> None:
    qs = summary("qas")
    text = section(built_site, CH6, "training-under-a-tight-budget", stop_level=2)
    assert f"{sci(qs['fp32_over_int8_min'])} to {sci(qs['fp32_over_int8_max'])} times too little" in text
    assert grouped(qs["fp32_over_int8_ratio"]["conv2"]) not in text and "about" not in text.split("too little")[0][-80:]
    assert qs["fp32_over_int8_min"] == min(qs["fp32_over_int8_ratio"].values())
    assert qs["fp32_over_int8_max"] == max(qs["fp32_over_int8_ratio"].values())


# 7. decoupled_weight_decay: the change that shipped it, and the release.
def test_decoupled_weight_decay_cites_the_refactor_that_shipped(built_site: Path) -> None:
    text = section(built_site, CH2, "one-step-on-a-scalar")
    assert "pytorch/pytorch#143710" in text and "#118857 , was closed without being merged" in text
    assert "#144984" in text and "first release with the flag is PyTorch 2.7" in text
    assert "merged in December 2024" not in text


# 8. AdamW's weight_decay is multiplied by lr; the paper's lambda is not.
def test_adamw_lr_times_lambda_is_said_where_readers_trip(built_site: Path) -> None:
    z = summary("weight_decay")["one_step"]["zero_grad"]["adamw"]
    text = section(built_site, CH2, "many-steps-the-equivalence-that-holds-and-the-one-that-does-not")
    assert "The same holds for AdamW" in text and "must be divided by the learning rate" in text
    assert f"moved θ \\theta θ by {num(z['shrink'])}" in text
    assert "divide it by lr" in section(built_site, SHEET, "text:Update rules")


# 9. fp8 e5m2fnuz: torch.finfo's eps is not the format's spacing at 1.0.
def test_finfo_eps_against_the_format_spacing(built_site: Path) -> None:
    import torch

    mismatch = summary("mixed_precision")["eps_mismatch"]
    assert mismatch["fp8_e5m2fnuz"] == {"dtype": "float8_e5m2fnuz", "eps": 0.125, "spacing_at_one": 0.25}
    text = section(built_site, CH5, "the-rule")
    assert "torch.finfo disagrees with the format for float8_e5m2fnuz (eps 0.125, spacing at 1.0 0.250)" in text
    assert "own exponent bias" not in text and "not the exponent bias" in text
    # the evidence on the installed torch: 1.13 rounds to 1.0 + spacing, and finfo still says 0.125
    assert torch.tensor(1.13).to(torch.float8_e5m2fnuz).float().item() == 1.25
    assert torch.finfo(torch.float8_e5m2fnuz).eps == 0.125


# 10. int32 holds 131,071 worst-case products of int8 codes in [-128, 127].
def test_int32_capacity_counts_minus_128(built_site: Path) -> None:
    qgs = summary("quantized_graph")
    assert qgs["int32_max_products"] == (2**31 - 1) // 128**2 == 131071
    text = section(built_site, CH6, "the-rule")
    assert "holds up to 131,071 such products" in text and "133,144" not in text
    assert "(-128)² = 16,384" in text
    acc = qgs["largest_accumulator"]
    assert f"{acc['predicted_worst_case_bits']} bits here" in drill(built_site, CH6, "How wide must its accumulator be")
    assert acc["predicted_worst_case_bits"] == (acc["reduction_length"] * 128**2).bit_length() + 1


# 11. Eval-mode BatchNorm is a trade-off, not a fix.
def test_eval_mode_batchnorm_is_a_trade_off(built_site: Path) -> None:
    text = section(built_site, CH2, "what-breaks-the-equivalence")
    assert "the fix, or the trade-off" in text and "which freezes the statistics and so changes the training" in text
    answer = drill(built_site, CH2, "Does gradient accumulation reproduce a big batch with BatchNorm")
    assert "a trade-off, not a fix" in answer


# 12. A copy on two cores is not the DRAM's bandwidth; the ridge points inherit that.
def test_copy_bandwidth_is_worded_as_measured(built_site: Path) -> None:
    bw = summary("hardware")["bandwidth"]
    text = section(built_site, HW, "memory-bandwidth")
    assert "gives the device's bandwidth" not in text
    if bw["limited_by_threads"]:
        assert f"a copy on {bw['threads']} threads streams on this host, not the bandwidth of its DRAM" in text
        assert "inherit that" in text
        answer = drill(built_site, HW, "Why does a copy of a small buffer look faster")
        assert "Only the latter is the memory's bandwidth" not in answer and "a lower bound" in answer
        assert "a lower bound on DRAM bandwidth" in section(built_site, SHEET, "text:This host at best")


# 13. The small ones.
def test_step_tensor_is_per_parameter_tensor(built_site: Path) -> None:
    assert "keep a step tensor per parameter tensor" in section(built_site, CH1, "the-rule")
    assert "The step counters (one per parameter tensor)" in section(
        built_site, CH2, "lazy-state-and-parameters-whose-gradient-is-none")


def test_set_to_none_names_the_bigger_model(built_site: Path) -> None:
    o, os_ = data("optimizer_state"), summary("optimizer_state")
    text = section(built_site, CH1, "zero_gradset_to_nonetrue-is-not-only-about-memory")
    d = o["model"]["d_model"]
    assert os_["zero_grad_extra_layer_bytes"] == 4 * (d * d + d)  # one fp32 Linear(d, d) with its bias
    for expected in (bytes_(o["zero_grad"]["zeros"]["grad_bytes_between_steps"]), f"Linear({d}, {d})",
                     bytes_(os_["zero_grad_extra_layer_bytes"]), bytes_(o["model"]["params_bytes"])):
        assert expected in text, expected


def test_index_and_footers_give_one_memory_figure(built_site: Path) -> None:
    memory = bytes_(_primary()[1]["optimizer_state"].good["host"]["device_memory_bytes"])
    assert f"{memory} of device memory" in section(built_site, "index.html", "the-training-memory-handbook",
                                                   stop_level=2)
    footer = section(built_site, CH1, "rerun-it")
    assert f"{memory} device memory" in footer


def test_smallest_state_drill_reads_plainly(built_site: Path) -> None:
    answer = drill(built_site, CH1, "Plain SGD keeps no state")
    assert "Which optimizer with per-parameter adaptive steps keeps the least" in answer
    assert "why is it not SGD with momentum" not in section(built_site, CH1, "drills")


def test_sgd_step_temporaries_are_not_the_buffers(built_site: Path) -> None:
    os_ = summary("optimizer_state")
    m = data("optimizer_state")["model"]
    assert os_["buffers_bytes"] == m["layers"] * m["seq"] ** 2  # the bool causal masks, one per layer
    assert os_["optimizers"]["sgd"]["foreach"]["step_temporaries_bytes"] == 0
    card = section(built_site, SHEET, "text:Optimizer state, measured")
    sgd = os_["optimizers"]["sgd"]["foreach"]
    assert f"sgd {num(sgd['state_over_params_ratio'])} {num(sgd['temporaries_over_params_ratio'])} " in card
    assert sgd["temporaries_over_params_ratio"] == 0 and "0.00435" not in card
    assert f"causal masks, {bytes_(os_['buffers_bytes'])}" in section(built_site, CH1, "the-temporaries-of-optimizerstep")


def test_print_contents_number_chapters_as_the_site_does(built_site: Path) -> None:
    events = _events(built_site / "handbook.html")
    start = next(i for i, e in enumerate(events) if e[0] == "start" and e[1] == "nav")
    end = next(i for i in range(start, len(events)) if events[i][0] == "end" and events[i][1] == "nav")
    contents, number = {}, None  # chapter title -> its number in the contents ("" for none)
    for i in range(start, end):
        e = events[i]
        if e[0] == "start" and e[1] == "span" and e[2].get("class") == "hb-toc-num":
            number = events[i + 1][1] if events[i + 1][0] == "text" else ""
        elif e[0] == "start" and e[1] == "a" and number is not None:
            contents[events[i + 1][1]] = number
            number = None
    for f in sorted((REPO / "docs").glob("[0-9][0-9]-*.md")):
        title = f.read_text(encoding="utf-8").splitlines()[0].removeprefix("# ")
        assert contents.get(title) == f.name[:2], (f.name, title, contents)
    assert contents["The Training Memory Handbook"] == "", "the home page has no chapter number"
    assert contents["Hardware"] == ""
    pdf = subprocess.run(["pdftotext", "-f", "2", "-l", "2", "-layout", str(built_site / "handbook.pdf"), "-"],
                         capture_output=True, text=True, check=True).stdout
    assert re.search(r"^01 +Where the memory goes", pdf, re.M) and not re.search(r"^\s*2\. ", pdf, re.M)
