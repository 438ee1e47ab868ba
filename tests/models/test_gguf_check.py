"""GGUF files that are not what they claim fail with one clear error naming the file (issue 21, item 6).

Hypothesis feeds the loader the GGUF magic followed by random bytes, valid files cut short at every
possible point, and valid files with random bytes overwritten; the only acceptable outcome is a
``ValueError`` whose message starts with the file's path (the CLI prints it as one paragraph).
"""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slimkit.models import load_model
from slimkit.models.gguf_check import GGUFFormatError, check_gguf_file

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _tiny_gguf(path: Path) -> bytes:
    """A small but complete GGUF: metadata with a string array, an F32 and an F16 tensor."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_embedding_length(8)
    writer.add_token_list(["a", "b", "c"])
    writer.add_tensor("token_embd.weight", np.arange(24, dtype=np.float32).reshape(3, 8))
    writer.add_tensor("blk.0.ffn_up.weight", np.ones((4, 32), dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> bytes:
    return _tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


def _load_fails_cleanly(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    try:
        load_model(str(path))
    except ValueError as err:
        assert str(err).startswith(f"{path}: "), str(err)
        return str(err)
    raise AssertionError("a corrupt GGUF file loaded")


def test_the_tiny_file_passes_the_check_and_a_cut_one_is_named_truncated(tmp_path, tiny_gguf):
    (tmp_path / "ok.gguf").write_bytes(tiny_gguf)
    check_gguf_file(tmp_path / "ok.gguf")
    (tmp_path / "cut.gguf").write_bytes(tiny_gguf[:-1])
    with pytest.raises(GGUFFormatError, match=r"cut\.gguf: not a valid GGUF file: tensor 'blk\.0\.ffn_up\.weight' "
                                              r"needs bytes .* \(truncated file\)"):
        check_gguf_file(tmp_path / "cut.gguf")


@FUZZ
@given(tail=st.binary(max_size=600))
def test_magic_followed_by_random_bytes(tmp_path, tail):
    _load_fails_cleanly(tmp_path / "random.gguf", b"GGUF" + tail)


@FUZZ
@given(version=st.sampled_from([2, 3]), tail=st.binary(max_size=400))
def test_a_valid_version_followed_by_random_bytes(tmp_path, version, tail):
    _load_fails_cleanly(tmp_path / "random.gguf", b"GGUF" + version.to_bytes(4, "little") + tail)


@FUZZ
@given(data=st.data())
def test_a_valid_file_cut_anywhere(tmp_path, tiny_gguf, data):
    cut = data.draw(st.integers(0, len(tiny_gguf) - 1))
    message = _load_fails_cleanly(tmp_path / "cut.gguf", tiny_gguf[:cut])
    assert "not a valid GGUF file" in message


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_valid_file_with_overwritten_header_bytes(tmp_path, tiny_gguf, data):
    header_end = 300  # the metadata and tensor table of the tiny file; its data follows
    start = data.draw(st.integers(4, header_end))
    junk = data.draw(st.binary(min_size=1, max_size=16))
    _load_fails_cleanly(tmp_path / "flipped.gguf", tiny_gguf[:start] + junk + tiny_gguf[start + len(junk):])


@pytest.mark.real_model
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_the_real_smollm2_header_cut_anywhere(tmp_path, data):
    from slimkit.models.packaged import packaged_model_path

    with packaged_model_path("smollm2-135m").open("rb") as fh:
        head = fh.read(2_500_000)  # the metadata (vocabulary, merges) and tensor table
    cut = data.draw(st.integers(0, len(head)))
    assert "not a valid GGUF file" in _load_fails_cleanly(tmp_path / "cut.gguf", head[:cut])
