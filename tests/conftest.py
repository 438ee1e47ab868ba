"""Suite-wide settings.

The kernel probe (:mod:`slimkit.quantize.kernel_probe`) picks each packed layer's path by timing it, so
a test that asserts exact outputs or a kernel's words would depend on the machine's load. Such tests
run without it (``SLIMKIT_KERNEL_PROBE=0``, inherited by the CLI subprocesses they start); tests of the
probe opt in with the ``kernel_probe`` marker and start from an empty probe cache.
"""

from __future__ import annotations

import pytest

from slimkit.quantize import kernel_probe


@pytest.fixture(autouse=True)
def _kernel_probe_switch(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.node.get_closest_marker("kernel_probe"):
        monkeypatch.setenv("SLIMKIT_KERNEL_PROBE", "1")
        monkeypatch.setattr(kernel_probe, "_ROUTES", {})
    else:
        monkeypatch.setenv("SLIMKIT_KERNEL_PROBE", "0")
