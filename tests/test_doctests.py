"""Run every ``>>>`` example in the symclone package (docs/design.md §8.9)."""
import doctest
import importlib
import pkgutil

import pytest

import symclone


def _modules():
    names = ["symclone"]
    for info in pkgutil.walk_packages(symclone.__path__, "symclone."):
        names.append(info.name)
    for sub in ("teachers", "students", "analysis"):
        pkg = importlib.import_module(f"symclone.{sub}")
        names.append(pkg.__name__)
        names += [i.name for i in pkgutil.walk_packages(pkg.__path__, f"symclone.{sub}.")]
    return sorted(set(n for n in names if not n.endswith("__main__")))


@pytest.mark.parametrize("name", _modules())
def test_doctests(name):
    mod = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(mod, name, globs={**vars(mod)}):
        runner.run(test)
    res = runner.summarize(verbose=False)
    assert res.failed == 0, f"{res.failed} doctest(s) failed in {name}"
