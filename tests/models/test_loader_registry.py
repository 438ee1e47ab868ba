"""load_model asks the loaders other parts of slimkit registered (the slimkit format) before its own, and names
every kind of path it can read when none fits."""

import pytest

from slimkit.models import loading
from slimkit.models.bundle import ModelBundle


@pytest.fixture
def private_loaders(monkeypatch):
    monkeypatch.setattr(loading, "_LOADERS", list(loading._LOADERS))


def test_a_registered_loader_is_asked_before_the_built_in_ones(private_loaders, tmp_path):
    (tmp_path / "config.json").write_text("{}")  # would otherwise be read as a Hugging Face directory
    (tmp_path / "model.onnx").write_text("")
    loading.register_loader(lambda path: (path / "model.onnx").is_file(),
                            lambda path, source: ModelBundle(None, "torch", source), what="an ONNX directory")
    assert loading.load_model(str(tmp_path)).source == str(tmp_path)


def test_a_path_no_loader_reads_names_every_kind_slimkit_reads(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match=r"not a model directory; slimkit reads a slimkit output \(slimkit.json\), "
                                         r"a sentence-transformers directory \(modules.json\), a Hugging Face "
                                         r"directory \(config.json\), a single .gguf file"):
        loading.load_model(str(tmp_path))


def test_registering_the_same_loader_twice_keeps_one(private_loaders):
    before = len(loading._LOADERS)
    for _ in range(2):
        loading.register_loader(lambda path: False, lambda path, source: None, what="nothing")
    assert len(loading._LOADERS) == before + 1
