"""Pose-specific pieces of the top-down pipeline: crops (UDP warp), heatmap codec, flip test, output formats."""
from sapiens2.tasks.pose.codec import decode_udp_heatmaps, encode_udp_heatmaps, heatmap_maxima, refine_dark_udp
from sapiens2.tasks.pose.crop import (BOX_PADDING, POSE_INPUT_SIZE, PoseCrops, boxes_to_center_size, crop_boxes,
                                      crop_to_image, decoded_to_image, fix_aspect_ratio, image_to_crop,
                                      udp_warp_matrix, warp_interpolation, warp_to_crop)
from sapiens2.tasks.pose.flip import flip_heatmaps_back, flip_indices, flip_test_average
from sapiens2.tasks.pose.formats import FORMAT_NAMES, KeypointFormat, convert_keypoints, keypoint_format, openpose_person
from sapiens2.tasks.pose.pipeline import BoxSource, PoseImage, as_detections, make_box_source, run_top_down

__all__ = [
    "decode_udp_heatmaps", "encode_udp_heatmaps", "heatmap_maxima", "refine_dark_udp",
    "BOX_PADDING", "POSE_INPUT_SIZE", "PoseCrops", "boxes_to_center_size", "crop_boxes", "crop_to_image",
    "decoded_to_image", "fix_aspect_ratio", "image_to_crop", "udp_warp_matrix", "warp_interpolation", "warp_to_crop",
    "flip_heatmaps_back", "flip_indices", "flip_test_average",
    "FORMAT_NAMES", "KeypointFormat", "convert_keypoints", "keypoint_format", "openpose_person",
    "BoxSource", "PoseImage", "as_detections", "make_box_source", "run_top_down",
]
