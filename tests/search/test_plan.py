"""The search path: strictly shrinking, cheapest sensitivity per byte first, ending at every group's smallest option."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slimkit.search.plan import Option, first_within, search_path


def test_the_cheaper_group_per_byte_is_compressed_first_and_options_can_be_skipped():
    options = {
        "robust": [Option("", 1000, 0.0), Option("int8", 250, 0.0015), Option("int4", 125, 0.0016)],
        "fragile": [Option("", 1000, 0.0), Option("int8", 250, 0.5), Option("int4", 125, 5.0)],
    }
    path = search_path(options, fixed_bytes=100)
    assert [p.choice for p in path] == [
        {"robust": "", "fragile": ""},
        {"robust": "int4", "fragile": ""},  # int8 then int4 would cost more per byte than jumping straight to int4
        {"robust": "int4", "fragile": "int8"},
        {"robust": "int4", "fragile": "int4"},
    ]
    assert [p.bytes for p in path] == [2100, 1225, 475, 350]
    assert first_within(path, 1000) == 2 and first_within(path, 300) is None


def test_the_untouched_option_is_required():
    with pytest.raises(ValueError, match="'g'.*untouched"):
        search_path({"g": [Option("int8", 10, 0.0)]})


option_lists = st.lists(st.tuples(st.integers(1, 10_000), st.floats(-0.01, 10.0)), min_size=0, max_size=5)


@given(st.dictionaries(st.sampled_from("abcdef"), st.tuples(st.integers(1, 10_000), option_lists), min_size=1))
def test_every_step_shrinks_and_the_path_ends_at_the_smallest_options(table):
    options = {g: [Option("", dense, 0.0)] + [Option(f"o{i}", b, c) for i, (b, c) in enumerate(opts)]
               for g, (dense, opts) in table.items()}
    path = search_path(options, fixed_bytes=7)
    assert path[0].bytes == 7 + sum(dense for dense, _ in table.values())
    assert all(later.bytes < earlier.bytes for earlier, later in zip(path, path[1:], strict=False))
    assert path[-1].bytes == 7 + sum(min(o.bytes for o in opts) for opts in options.values())
