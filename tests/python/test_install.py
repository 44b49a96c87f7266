"""The suite must test the installed wheel, not the source tree."""

import os
import sysconfig

import polycache
from polycache import _polycache


def test_imported_from_site_packages() -> None:
    site = os.path.realpath(sysconfig.get_paths()["purelib"])
    assert os.path.realpath(polycache.__file__).startswith(site + os.sep), polycache.__file__
    assert os.path.realpath(_polycache.__file__).startswith(site + os.sep), _polycache.__file__


def test_native_module_is_private_and_reexported() -> None:
    assert polycache.Cache.__module__ == "polycache"
    assert issubclass(polycache.Cache, _polycache.Cache)
    assert polycache.DEFAULT_TIMEOUT is _polycache.DEFAULT_TIMEOUT
    assert "memory://" in polycache.SCHEMES and "dummy://" in polycache.SCHEMES
    for name in polycache.__all__:
        assert hasattr(polycache, name), name
    assert "_polycache" not in polycache.__all__


def test_not_built_for_the_stable_abi() -> None:
    # abi3 costs ~80 ns a call; the wheel must target the running interpreter.
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    assert _polycache.__file__.endswith(suffix), (_polycache.__file__, suffix)


def test_inherited_methods_are_the_native_ones() -> None:
    # The Python subclass adds only async twins: sync calls must not go through Python code.
    for name in ("get", "set", "add", "delete", "incr", "get_many", "set_many", "get_or_set"):
        assert getattr(polycache.Cache, name) is getattr(_polycache.Cache, name), name
