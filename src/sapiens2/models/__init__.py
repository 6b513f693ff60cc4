"""Model definitions: the backbone (arch table, layers) and the task heads."""
from .arch import ARCHS, BackboneArch, get_arch
from .backbone import Sapiens2Backbone, build_backbone

__all__ = ["ARCHS", "BackboneArch", "Sapiens2Backbone", "build_backbone", "get_arch"]
