"""The tutorials' notebook support (tutorials/_notebook.py): options without a command
line, figures shown inline, matplotlib's backend left alone."""

import argparse
import os
import sys
import types

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tutorials"))
import _notebook  # noqa: E402


def parser():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default="outputs")
    return p


@pytest.fixture
def kernel(monkeypatch):
    """A notebook kernel: ipykernel loaded, the kernel's own command line, IPython's display."""
    shown = []
    display_module = types.ModuleType("IPython.display")
    display_module.display = shown.append
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    ipython = types.ModuleType("IPython")
    ipython.get_ipython, ipython.version_info = (lambda: None), (9, 0)  # what matplotlib asks of IPython
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "IPython.display", display_module)
    monkeypatch.setattr(sys, "argv", ["ipykernel_launcher.py", "-f", "/tmp/kernel-1.json"])
    return shown


def test_script_reads_its_command_line(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["tutorial.py", "--quick", "--out", "here"])
    monkeypatch.delenv("CAPTUM_CD_QUICK", raising=False)
    args = _notebook.options(parser())
    assert args.quick and args.out == "here"


def test_notebook_takes_the_quick_switch_from_the_environment(kernel, monkeypatch):
    monkeypatch.delenv("CAPTUM_CD_QUICK", raising=False)
    assert not _notebook.options(parser()).quick
    monkeypatch.setenv("CAPTUM_CD_QUICK", "1")
    monkeypatch.setenv("CAPTUM_CD_OUT", "pictures")
    args = _notebook.options(parser())
    assert args.quick and args.out == "pictures"


def test_figures_show_inline_in_a_notebook_and_are_written(kernel, tmp_path):
    figure = plt.figure()
    _notebook.show(figure, str(tmp_path / "f.png"))
    assert kernel == [figure] and (tmp_path / "f.png").stat().st_size > 0
    assert not plt.fignum_exists(figure.number)  # closed: shown once


def test_tutorials_choose_no_backend():
    for name in sorted(os.listdir(os.path.join(ROOT, "tutorials"))):
        if name.endswith(".py"):
            with open(os.path.join(ROOT, "tutorials", name)) as f:
                assert "matplotlib.use(" not in f.read(), name
