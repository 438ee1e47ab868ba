"""The on-disk format does not move: today's slimkit writes the same weights file byte for byte and the same
header (as JSON; it has been written compactly since, not indented) as slimkit wrote at commit 841b2a6 (before
codecs and module restorers were registered by their families), and loads those files back exactly.

The files under ``data/format_v1`` were written by that commit from the builders in ``_format_cases.py``.
"""

import json
from pathlib import Path

import pytest
import torch

from slimkit.export.slimkit_format import HEADER_FILE, WEIGHTS_FILE, load_slimkit_dir, save
from slimkit.quantize.record import quant_records
from tests.export._format_cases import CASES, TinyTied, build_case, inputs

STORED = Path(__file__).parent / "data" / "format_v1"


@pytest.mark.parametrize("case", list(CASES))
def test_saving_writes_the_same_bytes_as_before(case, tmp_path):
    save(build_case(case), tmp_path / case)
    assert (tmp_path / case / WEIGHTS_FILE).read_bytes() == (STORED / case / WEIGHTS_FILE).read_bytes()
    written, stored = ((d / case / HEADER_FILE).read_text() for d in (tmp_path, STORED))
    assert json.loads(written) == json.loads(stored)
    assert len(written) < len(stored)  # compact


@pytest.mark.parametrize("case", list(CASES))
def test_files_written_before_load_back_exactly(case):
    expected = build_case(case).model
    loaded = load_slimkit_dir(STORED / case, skeleton=TinyTied()).model
    assert [type(m) for m in loaded.modules()] == [type(m) for m in expected.modules()]
    want, got = expected.state_dict(), loaded.state_dict()
    assert list(got) == list(want)
    for name, tensor in want.items():
        assert got[name].dtype == tensor.dtype and torch.equal(got[name], tensor), name
    want_records, got_records = quant_records(expected), quant_records(loaded)
    assert sorted(got_records) == sorted(want_records) and (want_records or case == "packed")
    for name, record in want_records.items():
        assert got_records[name].scheme == record.scheme, name
        assert torch.equal(got_records[name].scale, record.scale) and torch.equal(got_records[name].zero, record.zero)
    with torch.no_grad():
        x = inputs().to(next(expected.parameters()).dtype)
        assert torch.equal(loaded(x), expected(x))


def test_the_cases_cover_every_storage_form():
    import json

    codecs, sections, buffers = set(), set(), set()
    for case in CASES:
        header = json.loads((STORED / case / HEADER_FILE).read_text())
        codecs |= {entry["codec"] for entry in header["tensors"].values()}
        sections |= set(header) - {"format", "format_version", "kind", "source", "origin", "arch", "applied",
                                   "tensors", "files"}
        buffers |= {name.rpartition(".")[2] for name in header["tensors"]}
    assert codecs == {"dense", "alias", "int", "bitmask"}
    assert sections == {"packed"}
    assert {"qdata", "input_scale", "input_smooth"} <= buffers
