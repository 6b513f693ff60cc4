"""The pose JSON documents: a header that makes the file self-describing (keypoint names, skeleton, how each
converted view is obtained) and one record per person with the 308 keypoints and the converted views.

Image inputs get ``<stem>.pose.json`` = header + ``"people"``. Video inputs get ``<stem>.pose.jsonl``: the first
line is the header, then one line per processed frame ``{"frame_index", "time_s", "people"}``; with tracking each
person has a ``track_id``, with smoothing ``keypoints`` are the smoothed points and ``keypoints_raw`` the model's
(see :func:`people_records`); with the pointmap task a frame also has ``pointmap_scale`` ``{"raw", "smoothed"}``
and each person ``depth_m`` / ``depth_m_raw``.
Points are ``[x, y, score]`` in image pixels ((0, 0) = centre of the top-left pixel); a point that is not
finite is written as ``[0, 0, 0]``.
"""
from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import numpy as np

from sapiens2.data.specs import keypoint_info
from sapiens2.tasks.pose.formats import convert_keypoints, keypoint_format
from sapiens2.tasks.results import PoseResult

FORMAT_VERSION = 1
#: Converted views written for every person, besides the 308 official keypoints.
VIEWS = ("coco17", "coco_wholebody133", "openpose_body25", "openpose_hand21_left", "openpose_hand21_right",
         "openpose_face70")
_COORD_DECIMALS = 2
_SCORE_DECIMALS = 4


@lru_cache(maxsize=None)
def _static_header() -> dict[str, Any]:
    info = keypoint_info()
    views = {}
    for name in VIEWS:
        fmt = keypoint_format(name)
        views[name] = {"num_keypoints": fmt.num_keypoints, "names": list(fmt.names), "mapping": fmt.describe()}
    return {
        "keypoint_names": list(info.names),
        "skeleton": [list(map(int, link)) for link in info.skeleton],
        "views": views,
        "views_note": ("Each view is derived from the 308 keypoints: 'direct' copies a point, 'midpoint' averages "
                       "two (score = the smaller), 'unavailable' points are [0, 0, 0]. Right/left are the "
                       "subject's."),
    }


def pose_header(*, model: str | None, image_size: tuple[int, int] | None = None, fps: float | None = None,
                box_source: str | None = None, kind: str = "image",
                settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The self-describing part of a pose file. ``image_size`` is (H, W). ``settings``: how the poses were made
    (``input_size`` {height, width} of the model's crops, ``flip_test``, ``detector``), null when not known."""
    header: dict[str, Any] = {"format": f"sapiens2.pose.{kind}", "format_version": FORMAT_VERSION, "model": model}
    settings = settings or {}
    for key in ("input_size", "flip_test", "detector"):
        header[key] = settings.get(key)
    if image_size is not None:
        header["image_size"] = {"height": int(image_size[0]), "width": int(image_size[1])}
    if fps is not None:
        header["fps"] = float(fps)
    if box_source is not None:
        header["box_source"] = box_source
    header["num_keypoints"] = keypoint_info().num_keypoints
    header["point_layout"] = ["x", "y", "score"]
    header.update(_static_header())
    return header


def _triples(keypoints: np.ndarray, scores: np.ndarray) -> list[list[float]]:
    """(K, 2), (K,) -> [[x, y, s], ...] rounded; non-finite points become [0, 0, 0]."""
    kp = np.asarray(keypoints, dtype=np.float64)
    sc = np.asarray(scores, dtype=np.float64)
    bad = ~(np.isfinite(kp).all(axis=1) & np.isfinite(sc))
    kp = np.where(bad[:, None], 0.0, kp).round(_COORD_DECIMALS)
    sc = np.where(bad, 0.0, sc).round(_SCORE_DECIMALS)
    return np.concatenate([kp, sc[:, None]], axis=1).tolist()


#: Per-person ``detector`` for the box sources that are not a detector (``PoseResult.box_source`` labels).
_BOX_ORIGINS = {"file": "boxes-file", "given": "given-boxes", "whole_image": "whole-image"}


def person_detector(box_source: str) -> str:
    """What produced a person's box, as each person record says: the detector's name (``rtdetr:ORG/NAME``, ``hog``,
    ``onnx``, ``seg``), ``boxes-file`` (``--boxes``), ``given-boxes`` (boxes passed with the image) or
    ``whole-image`` (no box: asked for with ``--detector none``, or nobody was found)."""
    if box_source.startswith("detector:"):
        return box_source[len("detector:"):]
    return _BOX_ORIGINS.get(box_source, box_source)


def people_records(pose: PoseResult, *, track_ids: np.ndarray | None = None,
                   smoothed_keypoints: np.ndarray | None = None, depth_raw: np.ndarray | None = None,
                   depth: np.ndarray | None = None) -> list[dict[str, Any]]:
    """One JSON-ready record per person: box, box score, the ``detector`` that produced the box
    (:func:`person_detector`), 308 keypoints and every converted view.

    Video extras: ``track_id`` (from ``track_ids``); with ``smoothed_keypoints`` the ``keypoints`` and the views
    are the smoothed points and the model's own are kept as ``keypoints_raw`` (scores are the model's in both);
    ``depth_m`` / ``depth_m_raw``: the person's median depth in metres (smoothed / per frame), null if unknown.
    """
    people = []
    points = pose.keypoints if smoothed_keypoints is None else np.asarray(smoothed_keypoints)
    converted = {name: convert_keypoints(points, pose.scores, name) for name in VIEWS} \
        if pose.num_people else {}
    detector = person_detector(pose.box_source)
    for p in range(pose.num_people):
        box = np.nan_to_num(np.asarray(pose.boxes[p], dtype=np.float64)).round(_COORD_DECIMALS).tolist()
        score = float(np.nan_to_num(pose.box_scores[p]))
        record: dict[str, Any] = {"id": p}
        if track_ids is not None:
            record["track_id"] = int(track_ids[p])
        record.update(box=box, box_score=round(score, _SCORE_DECIMALS), detector=detector,
                      keypoints=_triples(points[p], pose.scores[p]))
        if smoothed_keypoints is not None:
            record["keypoints_raw"] = _triples(pose.keypoints[p], pose.scores[p])
        if depth_raw is not None:
            record["depth_m"] = _metres(depth[p] if depth is not None else depth_raw[p])
            record["depth_m_raw"] = _metres(depth_raw[p])
        for name in VIEWS:
            kp, sc = converted[name]
            record[name] = _triples(kp[p], sc[p])
        people.append(record)
    return people


def _metres(value: float) -> float | None:
    return round(float(value), 4) if value is not None and np.isfinite(value) else None


def image_pose_document(pose: PoseResult, *, model: str | None, image_size: tuple[int, int],
                        settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The whole ``<stem>.pose.json`` document for one image."""
    document = pose_header(model=model, image_size=image_size, box_source=pose.box_source, kind="image",
                           settings=settings)
    document["num_people"] = pose.num_people
    document["people"] = people_records(pose)
    return document


def frame_pose_record(pose: PoseResult | None, *, frame_index: int, fps: float, time_s: float | None = None,
                      tracks: Any = None) -> dict[str, Any]:
    """One line of a video's JSON Lines file (after the header line).

    ``tracks``: the frame's :class:`~sapiens2.video.temporal.FrameTracks` (track ids, smoothed keypoints, person
    depths, pointmap scale), or None. ``time_s`` defaults to ``frame_index / fps``. ``pose`` None (a pointmap
    video without pose) gives a record without people.
    """
    when = frame_index / fps if time_s is None else time_s
    record: dict[str, Any] = {"frame_index": int(frame_index), "time_s": round(float(when), 6)}
    if pose is not None:
        extras = {}
        if tracks is not None:
            extras = dict(track_ids=tracks.track_ids, smoothed_keypoints=tracks.keypoints,
                          depth_raw=tracks.depth_raw, depth=tracks.depth)
        record.update(box_source=pose.box_source, num_people=pose.num_people, people=people_records(pose, **extras))
    if tracks is not None and tracks.scale_raw is not None:
        record["pointmap_scale"] = {"raw": round(float(tracks.scale_raw), 6),
                                    "smoothed": round(float(tracks.scale), 6)}
    return record
