"""Person boxes for the top-down pose pipeline: a common ``detect(image_rgb) -> Detections`` interface, the shipped
HOG detector, RT-DETR (transformers layout; the default, loaded by the inference layer), a user-supplied ONNX
detector, boxes files and boxes from a foreground mask."""
from sapiens2.tasks.detection.box_files import BoxFileSource, read_boxes_json, read_coco_boxes, write_boxes_json
from sapiens2.tasks.detection.boxes import (DetectionError, Detections, DetectorUnavailableError, PersonDetector,
                                            box_iou, check_rgb_image, empty_detections, nms, select_detections,
                                            whole_image_box)
from sapiens2.tasks.detection.hog import HogPersonDetector, hog_available
from sapiens2.tasks.detection.mask_boxes import boxes_from_mask
from sapiens2.tasks.detection.onnx_detector import (LETTERBOX_PRESETS, LetterboxConfig, OnnxPersonDetector,
                                                    decode_rtmdet, decode_yolov8, detect_layout, letterbox,
                                                    unletterbox_boxes)
from sapiens2.tasks.detection.rtdetr import (DetrPreprocess, RtDetrPersonDetector, decode_rtdetr_persons,
                                             person_label_id, rtdetr_pixels)

__all__ = [
    "BoxFileSource", "read_boxes_json", "read_coco_boxes", "write_boxes_json",
    "DetectionError", "Detections", "DetectorUnavailableError", "PersonDetector", "box_iou", "check_rgb_image",
    "empty_detections", "nms", "select_detections", "whole_image_box",
    "HogPersonDetector", "hog_available", "boxes_from_mask",
    "LETTERBOX_PRESETS", "LetterboxConfig", "OnnxPersonDetector", "decode_rtmdet", "decode_yolov8", "detect_layout",
    "letterbox", "unletterbox_boxes",
    "DetrPreprocess", "RtDetrPersonDetector", "decode_rtdetr_persons", "person_label_id", "rtdetr_pixels",
]
