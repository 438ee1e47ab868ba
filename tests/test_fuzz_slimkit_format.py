"""Property tests: a mutated ``slimkit.json`` or a damaged ``slimkit.safetensors`` either loads or raises one
:class:`FormatError` naming the file, and never unpickles anything."""

import json
import pickle
import shutil

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import slimkit
from slimkit.export.slimkit_format import FormatError, load_slimkit_dir, save
from tests._models import lenet_bundle

FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 5000) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A LeNet with int8 (dense codecs' and int codec's entries) and a 60%-pruned bitmask layer, saved once."""
    bundle = lenet_bundle()
    slimkit.apply(bundle.model, slimkit.RTNConfig(bits=8, symmetric=False, targets={"include": ["1"]}))
    slimkit.apply(bundle.model, slimkit.MagnitudePruneConfig(sparsity=0.6, targets={"include": ["5"]}))
    return save(bundle, tmp_path_factory.mktemp("fuzz") / "m")


@pytest.fixture(autouse=True)
def no_unpickling(monkeypatch):
    """Loading must never unpickle: make every way to do so fail loudly."""
    def forbidden(*args, **kwargs):
        raise AssertionError("unpickling attempted while loading a slimkit directory")

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)


def fresh_copy(saved, tmp_path_factory):
    target = tmp_path_factory.mktemp("case") / "m"
    shutil.copytree(saved, target)
    return target


def loads_or_names_the_file(directory):
    try:
        load_slimkit_dir(directory)
    except FormatError as err:
        assert str(directory) in str(err)


def paths(value, prefix=()):
    """Every path into a JSON value (dict keys and list indexes), the root included."""
    yield prefix
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield from paths(child, (*prefix, key))


def mutate(header, path, new, delete):
    if not path:
        return new
    parent = header
    for key in path[:-1]:
        parent = parent[key]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = new
    return header


@FUZZ
@given(data=st.data())
def test_a_mutated_header_loads_or_is_a_format_error(saved, tmp_path_factory, data):
    directory = fresh_copy(saved, tmp_path_factory)
    header = json.loads((directory / "slimkit.json").read_text())
    all_paths = list(paths(header))
    header = mutate(header, data.draw(st.sampled_from(all_paths)), data.draw(JSON_VALUES), data.draw(st.booleans()))
    (directory / "slimkit.json").write_text(json.dumps(header))
    loads_or_names_the_file(directory)


@FUZZ
@given(cut=st.floats(0.0, 1.0), flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 7)), max_size=4),
       garbage=st.none() | st.binary(max_size=256))
def test_a_damaged_weights_file_loads_or_is_a_format_error(saved, tmp_path_factory, cut, flips, garbage):
    directory = fresh_copy(saved, tmp_path_factory)
    weights = directory / "slimkit.safetensors"
    data = bytearray(weights.read_bytes() if garbage is None else garbage)
    header_end = 8 + int.from_bytes(data[:8], "little") if garbage is None else len(data)
    for where, bit in flips:  # flip bits in the safetensors header, where they change meaning
        if data:
            data[int(where * (min(header_end, len(data)) - 1))] ^= 1 << bit
    weights.write_bytes(bytes(data[: max(1, int(cut * len(data)))] if cut < 0.5 else data))
    loads_or_names_the_file(directory)


def test_the_fuzzed_directory_loads_untouched(saved):
    assert load_slimkit_dir(saved).kind == "torch"  # the properties above start from a loadable directory
