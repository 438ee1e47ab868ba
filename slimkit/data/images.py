"""Image classification data: Fashion-MNIST from IDX files and scikit-learn's digits."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
ImageSplit = Literal["train", "test"]


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:  # type: ignore[operator]
        data = fh.read()
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4: 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path}: truncated IDX file ({body.size} of {int(np.prod(dims))} values)")
    return body.reshape(dims)


def _find(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).exists():
            return root / name
    raise FileNotFoundError(f"{root}: no {stem}[.gz]. Install Fashion-MNIST with "
                            "`apt-get install dataset-fashion-mnist` or pass fashion-mnist:DIR")


def fashion_mnist(split: ImageSplit, root: str | None = None) -> tuple[Tensor, Tensor]:
    """Images (N, 1, 28, 28) float in [0, 1] and labels (N,) int64."""
    base = Path(root) if root else FASHION_MNIST_DIR
    prefix = "train" if split == "train" else "t10k"
    images = _read_idx(_find(base, f"{prefix}-images-idx3-ubyte"))
    labels = _read_idx(_find(base, f"{prefix}-labels-idx1-ubyte"))
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64))


def digits(split: ImageSplit) -> tuple[Tensor, Tensor]:
    """scikit-learn's 8×8 digits, (N, 1, 8, 8) in [0, 1]; a fixed 80/20 train/test split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    cut = int(0.8 * len(y))
    idx = order[:cut] if split == "train" else order[cut:]
    return x[idx], y[idx]


def image_data(kind: str, arg: str | None, split: ImageSplit) -> tuple[Tensor, Tensor]:
    """Dispatch an image data spec to its loader."""
    if kind == "fashion-mnist":
        return fashion_mnist(split, arg)
    if kind == "digits":
        return digits(split)
    raise ValueError(f"{kind} is not an image data set")
