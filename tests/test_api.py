"""The public API: one import gives every name in __all__, and importing the package is light."""

from __future__ import annotations

import subprocess
import sys

import pytest

import cryogen


def test_every_public_name_loads_from_the_package():
    for name in cryogen.__all__:
        assert getattr(cryogen, name) is not None
    assert cryogen.chunk.__module__ == "cryogen.tiling" and cryogen.Wedge(-60, 60).tilt_max == 60


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_thing"):
        _ = cryogen.no_such_thing


def test_importing_the_package_does_not_import_torch():
    code = "import sys, cryogen; from cryogen import chunk; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_all_lists_exactly_the_lazily_loaded_names():
    assert set(cryogen.__all__) == {"__version__", *cryogen._API}
