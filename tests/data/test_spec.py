"""The hf: spec's NAME/CONFIG/SPLIT rule, and text files that are not text."""

import sys
import types

import pytest

from slimkit.data.spec import DataSpec, hf_parts, parse_data_spec
from slimkit.data.text import documents, text_file_documents


@pytest.mark.parametrize("arg, expected", [
    ("wikitext", ("wikitext", None, None)),
    ("wikitext:test", ("wikitext", None, "test")),
    ("wikitext/wikitext-2-raw-v1", ("wikitext", "wikitext-2-raw-v1", None)),
    ("wikitext/wikitext-2-raw-v1:test", ("wikitext", "wikitext-2-raw-v1", "test")),
    ("org/name/config", ("org/name", "config", None)),
    ("org/name/config:train[:10%]", None),
    ("org/name/:validation", ("org/name", None, "validation")),
], ids=["name", "name-split", "name-config", "name-config-split", "org-name-config", "two-colons",
        "org-name-default-config"])
def test_hf_name_config_and_split(arg, expected):
    if expected is None:
        with pytest.raises(ValueError, match="hf:NAME"):
            hf_parts(arg)
    else:
        assert hf_parts(arg) == expected


@pytest.mark.parametrize("bad", ["hf:a/b/c/d", "hf:/x", "hf:a/", "hf:a//c"])
def test_malformed_hf_names_are_refused_when_parsed(bad):
    with pytest.raises(ValueError, match="ORG/NAME"):
        parse_data_spec(bad)


def test_hf_documents_pass_name_config_and_split_to_datasets(monkeypatch):
    calls = []

    class Dataset:
        column_names = ["text"]

        def __getitem__(self, column):
            return ["a document"]

    def load_dataset(name, config, split):
        calls.append((name, config, split))
        return Dataset()

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    documents(DataSpec("hf", "wikitext/wikitext-2-raw-v1:test"), "eval")
    documents(DataSpec("hf", "org/name/config"), "eval")
    assert calls == [("wikitext", "wikitext-2-raw-v1", "test"), ("org/name", "config", "validation")]


@pytest.mark.parametrize("suffix", [".txt", ".jsonl"])
def test_a_binary_text_file_is_an_error_naming_the_file(tmp_path, suffix):
    path = tmp_path / f"data{suffix}"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe" * 10)
    with pytest.raises(ValueError, match=f"{path.name}: not UTF-8 text"):
        text_file_documents(str(path))
