"""ComfyUI node classes (V3 schema). Node IDs are prefixed ``NTP_`` and never renamed."""

from typing_extensions import override

from comfy_api.latest import ComfyExtension, io

from .attention_controller import AttentionController
from .attention_maps import AttentionMaps
from .ddim_invert import DDIMInvert
from .edited_sample import EditedSample
from .fast_inversion import FastInversion
from .inversion_io import LoadInversion, SaveInversion
from .null_text_optimize import NullTextOptimize
from .reconstruction_check import ReconstructionCheck

NODES: list[type[io.ComfyNode]] = [
    DDIMInvert,
    NullTextOptimize,
    FastInversion,
    AttentionController,
    EditedSample,
    AttentionMaps,
    ReconstructionCheck,
    SaveInversion,
    LoadInversion,
]


class NullTextP2PExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)
