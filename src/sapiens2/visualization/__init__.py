"""Visualisation of Sapiens2 predictions on NumPy arrays; every function returns a new uint8 image
(RGB, or RGBA for cut-outs) and leaves its inputs untouched."""
from .dense import albedo_to_uint8, depth_to_rgb, mask_to_uint8, normals_to_rgb
from .matting import CHROMA_GREEN, matte_composite, matte_cutout
from .pose import KEYPOINT_SCORE_THRESHOLD, default_sizes, draw_poses, label_box, track_colour
from .seg import colorize_segmentation, draw_legend, legend_width, overlay_segmentation

__all__ = [
    "albedo_to_uint8", "depth_to_rgb", "mask_to_uint8", "normals_to_rgb",
    "CHROMA_GREEN", "matte_composite", "matte_cutout",
    "KEYPOINT_SCORE_THRESHOLD", "default_sizes", "draw_poses", "label_box", "track_colour",
    "colorize_segmentation", "draw_legend", "legend_width", "overlay_segmentation",
]
