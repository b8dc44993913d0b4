"""The fake and integer int8 graphs agree to one step, clipping trades rounding for outliers, and a narrow
accumulator corrupts outputs (the ``test`` profile)."""
import pytest

from experiments import quantized_graph as E
from conftest import test_profile_data


@pytest.fixture(scope="module")
def data():
    return test_profile_data("quantized_graph")


def test_fake_and_integer_graphs_agree_to_one_step(data):
    for layer in ("linear", "conv"):
        for gran in ("per_tensor", "per_channel"):
            row = data["layers"][layer][gran]
            # Fake and real graphs agree on (nearly) every int8 output code and never by more than one LSB.
            assert row["codes_equal_fraction"] > 0.99
            assert row["codes_max_diff_lsb"] <= 1
            # Both are close to fp32 at 8 bits (error of a few LSB at most, relative RMS under 5 %).
            assert 0 < row["real_vs_fp32_rel_rms"] < 0.05
    assert E.summarize(data)["fake_and_real_within_one_lsb"]


def test_clipping_trades_rounding_for_outliers(data):
    clip = data["clipping"]
    assert clip[0]["percentile"] == 100.0 and clip[0]["input_clipped_fraction"] == 0.0
    assert clip[-1]["input_clipped_fraction"] > 0.05   # 90th percentile clips ~10 % of the inputs
    assert clip[-1]["real_vs_fp32_rel_rms"] > clip[0]["real_vs_fp32_rel_rms"]
    s = E.summarize(data)
    assert s["no_clip_percentile"] == 100.0 and s["no_clip_rel_rms"] == clip[0]["real_vs_fp32_rel_rms"]
    assert s["best_clip_rel_rms"] == min(r["real_vs_fp32_rel_rms"] for r in clip)


def test_accumulator_width(data):
    s = E.summarize(data)
    assert s["narrowest_accumulator_bits"] == 16
    for row, derived in zip(data["accumulator"], s["accumulator"]):
        by = {b["bits"]: b for b in row["by_bits"]}
        # An accumulator at least as wide as the largest sum is exact; int16 saturates on these sums.
        assert derived["bits_needed"] > 16 and by[16]["codes_wrong_fraction"] > 0
        assert derived["narrowest_codes_wrong_fraction"] == by[16]["codes_wrong_fraction"]
        assert by[24]["codes_wrong_fraction"] == 0.0
        assert 2 ** (derived["bits_needed"] - 2) <= row["max_abs_accumulator"] < 2 ** (derived["bits_needed"] - 1)
        assert derived["bits_needed"] <= derived["predicted_worst_case_bits"]
    assert s["largest_accumulator"]["reduction_length"] == max(r["reduction_length"] for r in data["accumulator"])


def test_int32_capacity_and_bits_by_hand():
    s = E.summarize({"int8_max": 127, "layers": {}, "clipping": [{"percentile": 100.0, "real_vs_fp32_rel_rms": 0.1}],
                     "accumulator": [{"reduction_length": 64, "max_abs_accumulator": 65535,
                                      "fake_fp32_codes_differ_fraction": 0.0,
                                      "by_bits": [{"bits": 16, "codes_wrong_fraction": 0.5}]}]})
    # int8 runs from -128 to 127: the worst product is (-128)**2 = 2**14, and int32 (at most 2**31 - 1)
    # holds 131,071 of them (not 2**31 // 127**2 = 133,144).
    assert s["int32_max_products"] == 131071
    # 65535 needs 16 magnitude bits and a sign; 64 * 128**2 = 2**20 needs 21 and a sign.
    assert s["accumulator"][0]["bits_needed"] == 17
    assert s["accumulator"][0]["predicted_worst_case_bits"] == 22
