"""The shipped dataset: present, licensed, small, and loaded the same way every time."""
import torch

from experiments.lib import digits


def test_file_is_shipped_small_and_documented():
    assert digits.DATA_FILE.stat().st_size < 1_000_000
    readme = (digits.DATA_FILE.parent / "README.md").read_text(encoding="utf-8")
    for needed in ("CC BY 4.0", "10.24432/C50P49", "Alpaydin", "BSD 3-Clause"):
        assert needed in readme


def test_arrays():
    images, labels = digits.load_arrays()
    assert images.shape == (1797, 8, 8) and labels.shape == (1797,)
    assert images.min() == 0 and images.max() == 16
    assert sorted(set(labels.tolist())) == list(range(10))


def test_split_is_seeded_and_standardised():
    a, b = digits.load(seed=0), digits.load(seed=0)
    assert torch.equal(a["y_test"], b["y_test"])
    assert a["x_train"].shape[0] + a["x_test"].shape[0] == 1797
    assert abs(float(a["x_train"].mean())) < 1e-5 and abs(float(a["x_train"].std()) - 1) < 1e-4
    assert digits.load(size=16)["x_train"].shape[1:] == (1, 16, 16)
