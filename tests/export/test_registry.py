"""The format's plug-in points: codecs and module restorers that a family registers for itself, clear errors for
names nobody registered, and registries that are full whichever slimkit module a program imports first."""

import json
import subprocess
import sys

import pytest
import torch
from torch import Tensor, nn

import slimkit
from slimkit.export import registry
from slimkit.export.codecs import compress_state_dict, decompress_state_dict
from slimkit.export.registry import Codec, FormatError, register_codec, register_module_restorer
from slimkit.export.slimkit_format import load_slimkit_dir, save
from slimkit.models.bundle import ModelBundle
from tests._models import lenet_bundle


@pytest.fixture
def private_registry(monkeypatch):
    """Registrations made by a test vanish after it."""
    monkeypatch.setattr(registry, "_CODECS", dict(registry._CODECS))
    monkeypatch.setattr(registry, "_RESTORERS", dict(registry._RESTORERS))


@pytest.fixture
def saved(tmp_path):
    bundle = lenet_bundle()
    slimkit.apply(bundle.model, slimkit.RTNConfig(bits=8, targets={"include": ["1"]}))
    return save(bundle, tmp_path / "m")


def edit_header(directory, edit):
    header = json.loads((directory / "slimkit.json").read_text())
    edit(header)
    (directory / "slimkit.json").write_text(json.dumps(header))


def test_the_built_in_families_are_registered():
    assert registry.codec_names() == ["alias", "bitmask", "codebook", "dense", "huffman", "int"]
    assert [r.kind for r in registry.module_restorers()] == ["static-quant-linear", "packed"]


def test_an_unregistered_codec_in_a_file_is_a_format_error_listing_the_known_ones(saved):
    edit_header(saved, lambda h: h["tensors"]["1.weight"].update(codec="palette"))
    with pytest.raises(FormatError, match=r"tensors.1.weight: unknown codec 'palette' \(known: alias, bitmask, "
                                          r"codebook, dense, huffman, int\)") as err:
        load_slimkit_dir(saved)
    assert str(saved / "slimkit.json") in str(err.value)


def test_decompressing_an_unregistered_codec_is_a_format_error_not_a_key_error():
    with pytest.raises(FormatError, match=r"tensor 'w': unknown codec 'palette' \(known: alias, bitmask"):
        decompress_state_dict({"w": torch.zeros(2)}, {"w": {"codec": "palette"}})


def test_an_unknown_header_section_is_a_format_error_naming_it(saved):
    edit_header(saved, lambda h: h.update(clusters={"fc": 16}))
    with pytest.raises(FormatError, match=r"unknown header section 'clusters': no registered module kind restores "
                                          r"it \(known sections: packed\)"):
        load_slimkit_dir(saved)


def test_a_bad_packed_section_is_checked_by_its_restorer(saved):
    edit_header(saved, lambda h: h.update(packed={"float_dtype": "bfloat16", "modules": []}))
    with pytest.raises(FormatError, match=r"'packed' must be \{float_dtype: str, modules: \{path: spec\}\}"):
        load_slimkit_dir(saved)


class HalfNote:
    """A made-up family's note: store this tensor in float16."""


class HalfCodec(Codec):
    name = "half"
    note_type = HalfNote

    def notes(self, model):
        return {name: HalfNote() for name, p in model.named_parameters() if getattr(p, "store_half", False)}

    def attach(self, model, name, note):
        model.get_parameter(name).store_half = True

    def encode(self, name, tensor, note, out):
        out[f"{name}.half"] = tensor.half()
        return {"codec": self.name, "dtype": str(tensor.dtype).removeprefix("torch.")}

    def decode(self, name, entry, tensors):
        return tensors[f"{name}.half"].to(getattr(torch, entry["dtype"])), HalfNote()


class Scaled(nn.Module):
    """A made-up family's module: a factor that lives in no state dict, only in the header section."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: Tensor) -> Tensor:
        return x * self.factor


def scaled_spec(model):
    return {name: m.factor for name, m in model.named_modules() if isinstance(m, Scaled)} or None


def restore_scaled(model, state, spec):
    for path, factor in spec.items():
        setattr(model, path, Scaled(factor))


def check_scaled(spec, where):
    if not isinstance(spec, dict):
        raise FormatError(f"{where} must map module paths to factors")


def test_a_new_family_plugs_in_its_codec_and_module_restorer(private_registry, tmp_path):
    register_codec(HalfCodec())
    register_module_restorer("scaled", restore_scaled, header_spec=scaled_spec, check_spec=check_scaled)
    model = nn.Sequential(nn.Linear(8, 8), Scaled(3.0))
    model[0].weight.store_half = True
    save(ModelBundle(model, "torch", "plug-in"), tmp_path / "m")
    header = json.loads((tmp_path / "m" / "slimkit.json").read_text())
    assert header["tensors"]["0.weight"] == {"codec": "half", "dtype": "float32"}
    assert header["scaled"] == {"1": 3.0}
    loaded = load_slimkit_dir(tmp_path / "m", skeleton=nn.Sequential(nn.Linear(8, 8), nn.Identity())).model
    assert isinstance(loaded[1], Scaled) and loaded[1].factor == 3.0
    assert torch.equal(loaded[0].weight, model[0].weight.half().float()) and loaded[0].weight.store_half
    assert torch.equal(loaded[0].bias, model[0].bias)  # un-noted tensors keep the format's own codecs


def test_registering_another_codec_or_restorer_under_a_taken_name_is_refused(private_registry):
    class OtherInt(HalfCodec):
        name = "int"

    with pytest.raises(ValueError, match="codec 'int' is registered twice"):
        register_codec(OtherInt())
    with pytest.raises(ValueError, match="module restorer 'packed' is registered twice"):
        register_module_restorer("packed", restore_scaled, header_spec=scaled_spec, check_spec=check_scaled)
    with pytest.raises(ValueError, match="needs both header_spec and check_spec"):
        register_module_restorer("scaled", restore_scaled, header_spec=scaled_spec)


def test_a_note_no_codec_stores_is_refused():
    with pytest.raises(TypeError, match="no codec stores tensors noted with a object"):
        compress_state_dict({"w": torch.ones(2)}, {"w": object()})


IMPORT_ONLY = """
import sys
from pathlib import Path
import {module}
from slimkit.export.registry import codec_names, module_restorers
print(codec_names(), [r.kind for r in module_restorers()])
{then}
"""


@pytest.mark.parametrize("module, then", [
    ("slimkit.export.slimkit_format", ""),
    ("slimkit.models.loading",
     "from slimkit.quantize.record import quant_records\n"
     "model = slimkit.models.loading.load_model(sys.argv[1]).model\nprint(sorted(quant_records(model)))"),
], ids=["format-module", "loader-only"])
def test_importing_one_module_fills_the_registries(saved, module, then):
    out = subprocess.run([sys.executable, "-c", IMPORT_ONLY.format(module=module, then=then), str(saved)],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0] == "['alias', 'bitmask', 'codebook', 'dense', 'huffman', 'int'] ['static-quant-linear', 'packed']"
    if then:
        assert out[1] == "['1.weight']"
