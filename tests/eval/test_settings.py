"""--try parsing and the method configs a per-layer setting becomes."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slimkit.cluster.weight_sharing import KMeansClusterConfig
from slimkit.eval.settings import Setting, parse_tries, search_options
from slimkit.prune.magnitude import MagnitudePruneConfig
from slimkit.prune.sparsegpt import SparseGPTConfig
from slimkit.quantize.gptq import GPTQConfig
from slimkit.quantize.rtn import RTNConfig


def test_bits_pair_with_every_group_size_and_other_knobs_stay_single():
    settings = parse_tries(["bits=3,4", "group_size=64,channel", "sparsity=50%,0.7", "codebook=4"])
    assert [s.key for s in settings] == ["bits=3,group_size=64", "bits=3", "bits=4,group_size=64", "bits=4",
                                         "codebook=4", "sparsity=0.5", "sparsity=0.7"]


@pytest.mark.parametrize(("tries", "fragment"), [
    (["bits=4", "bits=8"], "given twice"),
    (["width=4"], "KNOB one of bits, group_size, codebook, sparsity"),
    (["bits=9"], "outside 2..8"),
    (["sparsity=1.5"], "fraction between 0 and 1"),
    (["group_size=64"], "needs --try bits"),
    (["bits="], "at least one value"),
    ([], "at least one --try"),
], ids=["twice", "unknown-knob", "bits-range", "sparsity-range", "group-without-bits", "empty", "none"])
def test_bad_tries_are_refused_naming_the_problem(tries, fragment):
    with pytest.raises(ValueError, match=fragment):
        parse_tries(tries)


@given(bits=st.one_of(st.none(), st.integers(2, 8)), group=st.one_of(st.none(), st.integers(1, 512)),
       sparsity=st.one_of(st.none(), st.floats(0.01, 0.99)))
def test_a_setting_key_reads_back_to_the_same_setting(bits, group, sparsity):
    setting = Setting(bits=bits, group_size=group if bits else None, sparsity=sparsity)
    if setting.key:
        assert Setting.from_key(setting.key) == setting


def test_a_setting_becomes_pruning_then_its_grid_with_the_groups_globs():
    include = ("model.layers.0.mlp.*",)
    data_free = Setting(codebook=4, sparsity=0.5).configs(include)
    assert [type(c) for c in data_free] == [MagnitudePruneConfig, KMeansClusterConfig]
    assert all(c.targets.include == include for c in data_free)
    calibrated = Setting(bits=4, group_size=128).configs(include, calibrated=True)
    assert isinstance(calibrated[0], GPTQConfig) and calibrated[0].group_size == 128
    assert isinstance(Setting(sparsity=0.5).configs(include, calibrated=True)[0], SparseGPTConfig)
    channel = Setting(bits=8).configs(include)[0]
    assert isinstance(channel, RTNConfig) and channel.granularity == "channel"


def test_search_options_pair_sparsity_only_with_codebooks():
    # an int tensor stores its zeros as integers, so sparsity + int grid would cost bytes and save none
    options = search_options(parse_tries(["bits=4", "codebook=3", "sparsity=0.5"]))
    assert [o.key for o in options] == ["bits=4", "codebook=3", "sparsity=0.5", "codebook=3,sparsity=0.5"]
