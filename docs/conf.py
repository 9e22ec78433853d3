"""Sphinx configuration of the captum-cd site (``./build_docs.sh``).

Sphinx, as Captum's own site: autodoc reads the docstrings in Captum's style (napoleon
parses their ``Args:``/``Returns:``), MyST-NB reads the markdown pages and runs the
tutorial notebooks itself (no pandoc, which nbsphinx would need).

The tutorials are executed at build time in their quick mode (``CAPTUM_CD_QUICK=1``):
the site's outputs always come from the code beside them and the repository keeps no
stored outputs to go stale. The test suite builds with ``-D nb_execution_mode=off``,
since ``tests/test_notebooks.py`` runs the same notebooks already.
"""

import glob
import importlib
import os
import shutil
import sys
import tempfile

from sphinx.util import logging

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# The tutorials live in tutorials/ (beside their scripts); the site renders copies of them.
os.makedirs(os.path.join(ROOT, "docs", "tutorials"), exist_ok=True)
for notebook in glob.glob(os.path.join(ROOT, "tutorials", "*.ipynb")):
    shutil.copy(notebook, os.path.join(ROOT, "docs", "tutorials"))
# What the notebook kernels inherit: the quick mode, a scratch folder for their files, the treebank.
os.environ.setdefault("CAPTUM_CD_QUICK", "1")
os.environ.setdefault("CAPTUM_CD_OUT", tempfile.mkdtemp(prefix="captum-cd-tutorials-"))
if "CAPTUM_CD_SST" not in os.environ:
    try:
        from experiments.datasets.sst import find_sst_root

        os.environ["CAPTUM_CD_SST"] = str(find_sst_root())
    except FileNotFoundError:
        pass  # the SST tutorials will say where they looked

project = "captum-cd"
author = "captum-cd contributors"
copyright = "captum-cd contributors"
release = importlib.import_module("captum_cd").__version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "myst_nb"]
exclude_patterns = ["_build", "README.md", "**.ipynb_checkpoints"]
html_theme = "furo"
html_title = f"captum-cd {release}"

# Captum's docstrings: the class's text, then __init__'s Args.
autoclass_content = "both"
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the docstrings state each argument's type in Captum's words
autodoc_default_options = {"members": True}
autodoc_inherit_docstrings = False  # torch's and scikit-learn's own methods are theirs to document
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_param = False  # types as Captum writes them ("int, optional"), not cross-references
napoleon_use_rtype = False
# "Returns:" as Captum writes it ("*Tensor* of **attributions**: ..."), a paragraph, not "type: text"
napoleon_custom_sections = ["Returns"]

# A broken cross-reference to this package fails the build; names of other packages
# (torch, Captum, NumPy, scikit-learn) are not resolved: there is no network for intersphinx.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(torch|captum|numpy|np|sklearn|pywt|nn|F|Tensor|matplotlib|transformers)(\..*)?"),
    (r"py:class", r"optional|array"),  # words of Captum's "(int, optional)" and "(array)" types
]

myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]
nb_execution_mode = "force"
nb_execution_timeout = 1800
nb_execution_raise_on_error = True
nb_merge_streams = True

# The public API: every name in these modules' __all__ must be documented on an API page
# (under the name users import it by, or where it is defined).
PUBLIC_MODULES = {
    "captum_cd": "captum_cd",
    "captum_cd.rules": "captum_cd.attr.rules",
    "captum_cd.transforms": "captum_cd.transforms",
    "captum_cd.penalties": "captum_cd.penalties",
    "captum_cd.wavelets": "captum_cd.wavelets",
}


def public_names():
    names = {}
    for public, path in PUBLIC_MODULES.items():
        module = importlib.import_module(path)
        for name in module.__all__:
            value = getattr(module, name)
            if not isinstance(value, type(sys)):  # submodules are documented by their own names
                names[f"{public}.{name}"] = value
    return names


def resolve(name):
    """The Python object a documented name stands for (None if it is not this package's)."""
    parts = name.split(".")
    try:
        value = importlib.import_module(parts[0])
        for part in parts[1:]:
            value = getattr(value, part)
    except (ImportError, AttributeError):
        return None
    return value


def check_api_coverage(app, env):
    """Warns (an error under -W) for a public name that no API page documents, under any
    of its names, or that has no docstring."""
    logger = logging.getLogger("captum_cd.api")
    documented = {id(resolve(name)) for name in env.get_domain("py").objects if name.startswith("captum_cd")}
    for qualified, value in public_names().items():
        if id(value) not in documented:
            logger.warning(f"public name {qualified} is not documented on any API page (docs/api/*.rst)")
        if not (getattr(value, "__doc__", None) or "").strip():
            logger.warning(f"public name {qualified} has no docstring")


def skip_generated_members(app, what, name, obj, skip, options):
    """scikit-learn's generated ``set_*_request`` methods are scikit-learn's."""
    return True if name.startswith("set_") and name.endswith("_request") else None


def setup(app):
    app.connect("autodoc-skip-member", skip_generated_members)
    app.connect("env-check-consistency", check_api_coverage)
