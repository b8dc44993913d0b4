"""The small real dataset the handbook ships: UCI handwritten digits, 8x8.

1797 images of 10 classes, read from ``experiments/data/digits.csv.gz`` (see
the README beside it for source, citation and license). No download ever:
the experiments run on hosts without a network.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

DATA_FILE = Path(__file__).resolve().parent.parent / "data" / "digits.csv.gz"
N_IMAGES = 1797
N_CLASSES = 10
PIXEL_MAX = 16.0


def load_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Images as float32 (N, 8, 8) in 0..16 and labels as int64 (N,)."""
    if not DATA_FILE.exists():
        raise FileNotFoundError(f"{DATA_FILE} is missing: it ships with the repository (see experiments/data/README.md)")
    with gzip.open(DATA_FILE, "rt", encoding="ascii") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    if table.shape != (N_IMAGES, 65):
        raise ValueError(f"{DATA_FILE}: expected {N_IMAGES}x65 values, found {table.shape}")
    return table[:, :64].reshape(-1, 8, 8).astype(np.float32), table[:, 64]


def load(device: str = "cpu", size: int = 8, seed: int = 0, test_fraction: float = 0.25) -> dict:
    """A seeded train/test split as tensors on ``device``.

    Images are scaled to [0, 1], standardised with the training mean and std,
    shaped (N, 1, size, size); ``size`` > 8 upsamples bilinearly.
    Returns ``{"x_train", "y_train", "x_test", "y_test"}``.
    """
    images, labels = load_arrays()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    n_test = int(round(test_fraction * len(labels)))
    test, train = order[:n_test], order[n_test:]
    x = torch.from_numpy(images / PIXEL_MAX).unsqueeze(1)
    if size != 8:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    mean, std = x[train].mean(), x[train].std()
    x = (x - mean) / std
    y = torch.from_numpy(labels)
    return {
        "x_train": x[train].to(device), "y_train": y[train].to(device),
        "x_test": x[test].to(device), "y_test": y[test].to(device),
    }
