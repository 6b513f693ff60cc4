"""Inputs and outputs for prediction: robust image reading, input discovery, video streaming and
writing, and atomic file writers."""
from .errors import ImageReadError, ImageTooLargeError, OutputWriteError, VideoReadError, VideoTooLargeError
from .imagesize import DEFAULT_MAX_PIXELS, header_size
from .images import DEFAULT_BACKGROUND, IMAGE_EXTENSIONS, LoadedImage, decode_image, load_image, read_image
from .sources import DiscoveredInputs, InputItem, discover_inputs, input_kind
from .video import VIDEO_EXTENSIONS, VideoWriter
from .writers import (atomic_open, atomic_path, encode_image, ensure_directory, outputs_exist, remove_stale_temp_files,
                      should_skip, write_bytes, write_image, write_json, write_npy, write_ply, write_png)

__all__ = [
    "ImageReadError", "ImageTooLargeError", "OutputWriteError", "VideoReadError", "VideoTooLargeError",
    "DEFAULT_MAX_PIXELS", "header_size",
    "DEFAULT_BACKGROUND", "IMAGE_EXTENSIONS", "LoadedImage", "decode_image", "load_image", "read_image",
    "DiscoveredInputs", "InputItem", "discover_inputs", "input_kind",
    "VIDEO_EXTENSIONS", "VideoWriter",
    "atomic_open", "atomic_path", "encode_image", "ensure_directory", "outputs_exist", "remove_stale_temp_files",
    "should_skip", "write_bytes", "write_image", "write_json", "write_npy", "write_ply", "write_png",
]
