"""``captum_cd.transforms``: the transforms TRIM works with (they live in
:mod:`captum_cd.attr.transforms`, beside the attribution methods that use them)."""

from captum_cd.attr.transforms import *  # noqa: F401,F403
from captum_cd.attr.transforms import __all__  # noqa: F401
