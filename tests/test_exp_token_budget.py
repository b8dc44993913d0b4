"""token_budget on its test profile: the largest batch fits and the next does not (both measured), the estimator's
answer beside it, the corpus's real lengths and the padding/packing counts; what summarize derives."""
import pytest

from experiments import token_budget as tb
from conftest import test_profile_data


@pytest.fixture(scope="module")
def data():
    return test_profile_data("token_budget")


def test_largest_batch_fits_and_the_next_does_not(data):
    budget = data["budget_bytes"]
    assert list(data["frontier"]) == [str(s) for s in tb.PROFILES["test"].seqs]
    for key, p in data["frontier"].items():
        assert p["max_batch"] >= 1, key
        assert p["peak_at_max_bytes"] <= budget < p["peak_at_next_bytes"], key
        assert p["tokens_per_step_tokens"] == p["max_batch"] * p["seq"]
        assert p["estimator_max_batch"] >= 1 and p["estimator_peak_at_max_bytes"] > 0
    short, long_ = data["frontier"].values()
    assert long_["max_batch"] < short["max_batch"]


def test_the_corpus_is_real_and_counted(data):
    docs = tb.corpus_documents()
    lengths = [len(d) for d in docs]
    c = data["corpus"]
    assert c["docs_count"] == len(docs) > 1000 and c["total_tokens"] == sum(lengths)
    assert sum(b["docs_count"] for b in c["histogram"]) == len(docs)
    counts = c["counts"]
    assert counts["real_tokens"] <= counts["packed_tokens"] < counts["real_tokens"] + counts["cap_tokens"]
    assert counts["pad_to_batch_longest_tokens"] >= counts["real_tokens"]
    pp = data["pad_vs_pack"]
    assert pp["padded"]["real_tokens"] == pp["packed"]["real_tokens"]
    assert pp["packed"]["slots_tokens"] < pp["padded"]["slots_tokens"]
    assert pp["packed"]["peak_bytes"] < pp["padded"]["peak_bytes"]


def test_length_counts_exact():
    c = tb.length_counts([1, 3, 8, 2], cap=4, batch=2)
    assert c == {"cap_tokens": 4, "batch_docs": 2, "real_tokens": 1 + 3 + 4 + 2, "pad_to_cap_tokens": 16,
                 "pad_to_batch_longest_tokens": 2 * 3 + 2 * 4, "packed_tokens": 12, "truncated_docs_count": 1}


@pytest.mark.parametrize("start", [1, 5, 37, 100])
def test_search_finds_the_largest_from_any_guess(start):
    calls = []

    def fits(b):
        calls.append(b)
        return b <= 37

    assert tb.largest(fits, start, 100) == 37
    assert tb.largest(lambda b: False, start, 100) == 0
    assert tb.largest(lambda b: True, start, 100) == 100


def test_packing_keeps_every_token_in_order():
    docs = [b"abc", b"de", b"fghij"]
    idx, tgt = tb.packed_batch(docs, 4, "cpu")
    assert idx.shape == (3, 4) and bytes(tgt[tgt != -100].tolist()) == b"abcdefghij"
    idx, tgt = tb.padded_batch(docs, "cpu")
    assert idx.shape == (3, 5) and int((tgt != -100).sum()) == 10


def test_summary_from_canned_measurements():
    def point(seq, b, est):
        return {"seq": seq, "max_batch": b, "tokens_per_step_tokens": b * seq, "peak_at_max_bytes": 90,
                "peak_at_next_bytes": 110, "probes_count": 3, "estimator_max_batch": est,
                "estimator_peak_at_max_bytes": 99}

    def side(rows, real, ms):
        return {"rows": rows, "row_tokens": 8, "slots_tokens": rows * 8, "real_tokens": real, "peak_bytes": rows * 10,
                "estimator_peak_bytes": rows * 11, "time": {"median_ms": ms, "iqr_ms": 1.0, "runs": 3}}

    data = {"budget_bytes": 100, "budget_source": "config",
            "frontier": {"16": point(16, 10, 9), "64": point(64, 1, 2)},
            "corpus": {"docs_count": 10, "counts": {"real_tokens": 50, "pad_to_cap_tokens": 100,
                                                    "pad_to_batch_longest_tokens": 80, "packed_tokens": 56,
                                                    "truncated_docs_count": 1}},
            "pad_vs_pack": {"padded": side(8, 32, 4.0), "packed": side(4, 32, 2.0)}}
    s = tb.summarize(data)
    assert s["frontier"]["64"]["tokens_ratio_vs_shortest"] == 0.4 and s["tokens_fall_at_longest_ratio"] == 0.4
    assert s["frontier"]["16"]["estimator_safe"] is True and s["frontier"]["64"]["estimator_safe"] is False
    assert s["estimator_always_safe"] is False and s["budget_from_config"] is True
    assert s["corpus"]["pad_to_cap_waste_share"] == 0.5 and s["corpus"]["truncated_share"] == 0.1
    assert s["pad_vs_pack"]["padded_waste_share"] == 0.5 and s["pad_vs_pack"]["packed_waste_share"] == 0.0
    assert s["pad_vs_pack"]["peak_ratio_packed_vs_padded"] == 0.5 and s["pad_vs_pack"]["time_ratio_packed_vs_padded"] == 0.5
