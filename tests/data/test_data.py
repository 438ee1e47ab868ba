"""Data specs, deterministic disjoint splits, text files, image sets and calibration loops."""

import gzip
import struct
from pathlib import Path

import pytest
import torch

from slimkit.data.images import FASHION_MNIST_DIR, digits, fashion_mnist
from slimkit.data.spec import DataSpec, parse_data_spec
from slimkit.data.text import documents, pydoc_documents, sentences, text_file_documents, token_windows


@pytest.mark.parametrize("spec, expected", [
    ("pydoc", DataSpec("pydoc")), ("text:/a/b.txt", DataSpec("text", "/a/b.txt")),
    ("hf:wikitext/wikitext-2-raw-v1:test", DataSpec("hf", "wikitext/wikitext-2-raw-v1:test")),
    ("fashion-mnist", DataSpec("fashion-mnist")), ("fashion-mnist:/d", DataSpec("fashion-mnist", "/d")),
    ("digits", DataSpec("digits")),
])
def test_specs_parse(spec, expected):
    assert parse_data_spec(spec) == expected and str(parse_data_spec(spec)) == spec


@pytest.mark.parametrize("bad", ["wiki", "text:", "pydoc:x", "hf:"])
def test_bad_specs_list_the_accepted_forms(bad):
    with pytest.raises(ValueError, match="text:PATH"):
        parse_data_spec(bad)


def test_pydoc_splits_are_disjoint_and_deterministic():
    calib, val, evals = (documents(DataSpec("pydoc"), s) for s in ("calib", "val", "eval"))
    assert not set(calib) & set(evals) and not set(val) & set(evals) and not set(val) & set(calib)
    assert len(calib) > len(evals) > len(val) > 5
    assert sorted(calib + val + evals) == sorted(pydoc_documents())
    assert evals == documents(DataSpec("pydoc"), "eval")


def test_one_text_file_splits_into_three_disjoint_parts(tmp_path):
    text = "".join(f"sentence number {i}. " for i in range(800))
    (tmp_path / "one.txt").write_text(text)
    parts = [documents(DataSpec("text", str(tmp_path / "one.txt")), s)[0] for s in ("calib", "val", "eval")]
    assert "".join(parts) == text
    assert len(parts[0]) > len(parts[2]) > len(parts[1]) > 0


def test_text_files_and_jsonl(tmp_path):
    (tmp_path / "a.txt").write_text("first document. " * 20)
    (tmp_path / "b.jsonl").write_text('{"text": "second"}\n\n{"text": "third"}\n')
    assert text_file_documents(str(tmp_path)) == ["first document. " * 20, "second", "third"]
    (tmp_path / "c.jsonl").write_text('{"txt": 1}\n')
    with pytest.raises(ValueError, match=r"c.jsonl:1: each JSONL record needs a string 'text'"):
        text_file_documents(str(tmp_path / "c.jsonl"))
    with pytest.raises(FileNotFoundError):
        text_file_documents(str(tmp_path / "missing.txt"))


class CharTokenizer:
    """A stand-in tokenizer: one token per character."""

    def __call__(self, text, return_tensors=None, add_special_tokens=False):
        return {"input_ids": torch.tensor([[ord(c) % 256 for c in text]])}


def test_token_windows_are_non_overlapping_and_bounded():
    windows = token_windows(CharTokenizer(), ["abcdefghij", "klmnop"], seq_len=5, count=10)
    assert windows.shape == (3, 5)  # 10 + 2 + 6 = 18 chars → 3 windows
    assert windows[1, 0] == ord("f")
    with pytest.raises(ValueError, match="fewer than one window"):
        token_windows(CharTokenizer(), ["ab"], seq_len=5, count=1)


def test_sentences_respect_bounds():
    out = sentences(documents(DataSpec("pydoc"), "eval"), 50)
    assert len(out) == 50 and all(30 <= len(s) <= 400 for s in out)


def write_idx(path: Path, array: bytes, dims: tuple[int, ...]):
    header = b"\x00\x00\x08" + bytes([len(dims)]) + struct.pack(f">{len(dims)}I", *dims)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array)


def test_idx_reader_on_synthetic_files(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", bytes(range(2 * 28 * 28 % 256)) * 0 + bytes(2 * 28 * 28),
              (2, 28, 28))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", bytes([3, 7]), (2,))
    x, y = fashion_mnist("test", str(tmp_path))
    assert x.shape == (2, 1, 28, 28) and y.tolist() == [3, 7]
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", bytes([3]), (2,))
    with pytest.raises(ValueError, match="truncated"):
        fashion_mnist("test", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist("train", str(tmp_path))


@pytest.mark.skipif(not FASHION_MNIST_DIR.exists(), reason="apt-get install dataset-fashion-mnist (done by .ci/run)")
def test_real_fashion_mnist():
    x, y = fashion_mnist("test")
    assert x.shape == (10_000, 1, 28, 28) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert torch.bincount(y).tolist() == [1000] * 10


def test_digits_split():
    xtr, ytr = digits("train")
    xte, yte = digits("test")
    assert len(xtr) + len(xte) == 1797 and xtr.shape[1:] == (1, 8, 8)
