"""The "Beyond checkpointing" page and its cheat-sheet part render this host's numbers: a mini site built with
``--strict`` from the test profiles of activation_offload, activation_compression, token_budget, sac_budget and
optimizer_8bit."""
import re

import pytest

from conftest import build_chapter_site, site_text, test_profile_data
from experiments import activation_compression, activation_offload, optimizer_8bit, sac_budget, token_budget
from generator.site.formatting import bytes_, grouped, pct, ratio, sci

MODULES = {"activation_offload": activation_offload, "activation_compression": activation_compression,
           "token_budget": token_budget, "sac_budget": sac_budget, "optimizer_8bit": optimizer_8bit}
PAGE = "04b-beyond-checkpointing.md"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("beyond")
    data = {name: test_profile_data(name) for name in MODULES}
    stubs = {p: f"# {p}\n" for p in ("03-activations.md", "04-checkpointing.md", "07-will-it-fit.md")}
    out = build_chapter_site(root, data, (PAGE,), ("_cheatsheet/04b-beyond-checkpointing.md",), stubs=stubs)
    return out, data, {name: m.summarize(data[name]) for name, m in MODULES.items()}


def test_page_renders_the_numbers(site):
    out, data, s = site
    text = re.sub(r"\s+", " ", site_text(out, "04b-beyond-checkpointing/index.html"))
    o, c, t, b, e8 = (data[n] for n in MODULES)
    so, sc, st, sb, s8 = (s[n] for n in MODULES)
    q8 = s8["optimizers"]["adamw-8bit"]
    mm = o["variants"]["mmap_files"]
    middle = sb["budgets"][sb["middle_key"]]
    for expected in (
        "moving the saved activations out to memory-mapped files",   # the CPU host's offload, from the summary
        bytes_(mm["activations_after_forward_bytes"]), bytes_(mm["disk_written_bytes"]),
        ratio(so["variants"]["mmap_files"]["activations_ratio_vs_none"]),
        sci(c["schemes"]["int8_tensor"]["rel_error_norm_ratio"]), ratio(sc["schemes"]["int8_tensor"]["stored_ratio"]),
        sc["schemes"]["int8_tensor"]["worst_kind_label"], sc["kind_labels"]["attention_core"],
        pct(st["pad_vs_pack"]["padded_waste_share"]), pct(st["corpus"]["pad_to_cap_waste_share"]),
        grouped(t["corpus"]["docs_count"]), "pydoc_data.topics",
        bytes_(t["frontier"]["128"]["peak_at_next_bytes"]), bytes_(t["frontier"]["16"]["estimator_peak_at_max_bytes"]),
        bytes_(b["eager"]["saved_bytes"]), bytes_(middle["promised_bytes"]), middle["label"],
        # 8-bit AdamW, measured: bytes against the estimator, training, the step's time and memory
        bytes_(q8["state_bytes"]), bytes_(q8["predicted_state_bytes"]), bytes_(s8["optimizers"]["adamw"]["state_bytes"]),
        f"Tensor by tensor it matched the estimator's adamw-8bit ({ratio(q8['per_tensor_over_predicted_ratio'], 4)})",
        ratio(s8["state_ratio"]), pct(q8["test_accuracy"]), ratio(s8["step_time_ratio"]),
        bytes_(q8["step_unseen_by_tracker_bytes"]), f"bitsandbytes {e8['bitsandbytes']['version']}",
        "Training loss of fp32 and 8-bit AdamW state on the digits",
        "8-bit AdamW: what does it save, and what does it cost?",
    ):
        assert expected in text, expected
    assert "pinned host memory (save_on_cpu)" not in text  # no CUDA row on this host
    assert "Not measured on this host: bitsandbytes did not import" not in text


def test_without_bitsandbytes_the_page_says_so(tmp_path):
    """A host whose bitsandbytes did not import (the GPU host): the fp32 side, the error, the estimate kept."""
    data = {name: test_profile_data(name) for name in MODULES}
    e8 = data["optimizer_8bit"]
    e8["bitsandbytes"] = {"available": False, "version": None, "error": "ModuleNotFoundError: No module named 'x'"}
    e8["optimizers"]["adamw-8bit"] = None
    stubs = {p: f"# {p}\n" for p in ("03-activations.md", "04-checkpointing.md", "07-will-it-fit.md")}
    out = build_chapter_site(tmp_path, data, (PAGE,), ("_cheatsheet/04b-beyond-checkpointing.md",), stubs=stubs)
    text = re.sub(r"\s+", " ", site_text(out, "04b-beyond-checkpointing/index.html"))
    assert "Not measured on this host: bitsandbytes did not import (ModuleNotFoundError: No module named 'x')" in text
    assert "stays an estimate here" in text and "What does it save, and what does it cost?" not in text
    sheet = re.sub(r"\s+", " ", site_text(out, "cheatsheet/index.html"))
    assert "(estimate; not measured here)" in sheet


def test_cheatsheet_part_renders(site):
    out, data, s = site
    text = re.sub(r"\s+", " ", site_text(out, "cheatsheet/index.html"))
    assert "Beyond checkpointing" in text
    assert pct(s["token_budget"]["pad_vs_pack"]["packed_waste_share"]) in text
    assert sci(data["activation_compression"]["schemes"]["int8_tensor"]["rel_error_norm_ratio"]) in text
    s8 = s["optimizer_8bit"]
    assert f"state {ratio(s8['state_ratio'])} of fp32's, loss {ratio(s8['final_loss_ratio'])}" in text
