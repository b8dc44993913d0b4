import json

from experiments import quantized_graph as E
from experiments.lib.cli import to_json

TINY = E.Config(batch=32, linear_out=8, conv_in=4, conv_out=4, image_size=8,
                clip_percentiles=(100.0, 99.0, 90.0), accumulator_sizes=(8, 16), accumulator_batch=16,
                accumulator_bits=(16, 20, 24))


def test_quantized_graph_tiny():
    data = E.run(TINY, "cpu")
    json.loads(to_json(data))
    for layer in ("linear", "conv"):
        for gran in ("per_tensor", "per_channel"):
            row = data["layers"][layer][gran]
            # Fake and real graphs agree on (nearly) every int8 output code and never by more than one LSB.
            assert row["codes_equal_fraction"] > 0.99
            assert row["codes_max_diff_lsb"] <= 1
            # Both are close to fp32 at 8 bits (error of a few LSB at most, relative RMS under 5 %).
            assert 0 < row["real_vs_fp32_rel_rms"] < 0.05
    clip = data["clipping"]
    assert clip[0]["input_clipped_fraction"] == 0.0
    assert clip[-1]["input_clipped_fraction"] > 0.05   # 90th percentile clips ~10 % of the inputs
    assert clip[-1]["real_vs_fp32_rel_rms"] > clip[0]["real_vs_fp32_rel_rms"]
    for row in data["accumulator"]:
        by = {b["bits"]: b for b in row["by_bits"]}
        # An accumulator at least as wide as the largest sum is exact; int16 saturates on these sums.
        assert row["bits_needed"] > 16 and by[16]["codes_wrong_fraction"] > 0
        assert by[24]["codes_wrong_fraction"] == 0.0
        assert row["bits_needed"] <= row["predicted_worst_case_bits"]
    # int32 holds 2**31 // 127**2 worst-case products; the largest sweep's bits stay within int32.
    assert data["int32_max_products"] == 133144
    assert data["int32_max_products"] * 127 * 127 < 2 ** 31 <= (data["int32_max_products"] + 1) * 127 * 127
    figs = E.plot(data)
    assert set(figs) == {"clipping", "accumulator"}
