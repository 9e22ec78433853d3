"""Every import of a Captum private helper, in one place.

Captum's public surface is ``captum.attr``, ``captum.metrics`` and ``captum.log``; the
helpers below are private and may move between releases. If one does, this file is the
only one to change.
"""

from captum._utils.common import (  # noqa: F401
    _expand_target,
    _format_additional_forward_args,
    _format_output,
    _format_tensor_into_tuples,
    _is_tuple,
    _select_targets,
    _verify_select_neuron,
    ExpansionTypes,
)
from captum._utils.typing import TargetType, TensorOrTupleOfTensorsGeneric  # noqa: F401
