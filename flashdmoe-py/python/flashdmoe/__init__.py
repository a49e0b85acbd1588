"""FlashDMoE for PyTorch: a Mixture-of-Experts layer as a ``torch.nn.Module``.

``flashdmoe.MoE`` holds one rank's experts and runs ``y = moe(x)`` through the
``flashdmoe::moe_forward`` custom op. CPU tensors run on FlashDMoE's CPU simulator; CUDA
tensors will run the persistent GPU kernel once the device-resident forward (issue 14) is
wired in. See docs/python.md.
"""

from . import _ops
from ._native import __version__
from .moe import MoE

moe_forward = _ops.moe_forward

__all__ = ["MoE", "moe_forward", "__version__"]
