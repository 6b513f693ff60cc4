"""Conversions of the 308 Sapiens2 keypoints to common layouts: COCO-17, COCO-WholeBody-133, OpenPose BODY_25,
OpenPose hands (2 x 21), the 68-point face (300-W / iBUG order) and OpenPose's 70-point face (68 + pupils).

Each target point is obtained in one of three ways (see ``KeypointFormat.describe()``):
- direct: a 308 keypoint of the same meaning (e.g. COCO ``left_wrist`` <- ``left_wrist``; hand joint 1 (thumb CMC,
  finger MCP) <- ``*_third_joint``, joints 2-4 <- ``*2``..``*4``, 4 = tip);
- midpoint: the mean of two 308 keypoints, score = the smaller of their scores (OpenPose ``Neck`` = mid-shoulders and
  ``MidHip`` = mid-hips as OpenPose defines them, not the 308 set's own ``neck`` landmark; the 68-face eye corners =
  mid of the upper and lower lash-line ends, which meet there);
- unavailable: no counterpart in the 308 set (the jaw line except the chin, eyelid / brow / lip / nose points whose
  ordering along the contour is not defined by the 308 names): coordinates 0 and score 0.
"Right" and "left" are the subject's, as in all these formats.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from sapiens2.data.specs import keypoint_info

__all__ = ["KeypointFormat", "FORMAT_NAMES", "keypoint_format", "convert_keypoints", "openpose_person"]

_COCO17 = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
           "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
           "right_knee", "left_ankle", "right_ankle")
_FEET = ("left_big_toe", "left_small_toe", "left_heel", "right_big_toe", "right_small_toe", "right_heel")
_FINGERS = ("thumb", "forefinger", "middle_finger", "ring_finger", "pinky_finger")


def _hand(side: str) -> list[tuple[str, tuple[str, ...]]]:
    """21 hand points in OpenPose / COCO-WholeBody order: wrist, then per finger base joint -> tip.

    308 names count joints from the tip: ``finger4`` = tip, ``finger3``, ``finger2``, ``finger_third_joint`` = base
    (thumb CMC, finger MCP), so target joint 1 <- ``_third_joint`` and joints 2..4 <- the same number.
    """
    points = [(f"{side}_hand_root", (f"{side}_wrist",))]
    for finger in _FINGERS:
        points.append((f"{side}_{finger}1", (f"{side}_{finger}_third_joint",)))
        points += [(f"{side}_{finger}{j}", (f"{side}_{finger}{j}",)) for j in (2, 3, 4)]
    return points


def _face68() -> list[tuple[str, tuple[str, ...]]]:
    """68-point face, 0-based iBUG numbering; only points with a clear 308 counterpart are filled."""
    known: dict[int, tuple[str, ...]] = {
        8: ("tip_of_chin",),
        17: ("end_of_r_eyebrow",), 21: ("upper_startpoint_of_r_eyebrow",),  # brow tail / head (upper edge)
        22: ("upper_startpoint_of_l_eyebrow",), 26: ("end_of_l_eyebrow",),
        27: ("center_of_nose_root",), 30: ("tip_of_nose",),
        31: ("r_outer_corner_of_nose",), 33: ("bottom_center_of_nose",), 35: ("l_outer_corner_of_nose",),
        36: ("r_outer_end_of_upper_lash_line", "r_outer_end_of_lower_lash_line"),
        39: ("r_inner_end_of_upper_lash_line", "r_inner_end_of_lower_lash_line"),
        42: ("l_inner_end_of_upper_lash_line", "l_inner_end_of_lower_lash_line"),
        45: ("l_outer_end_of_upper_lash_line", "l_outer_end_of_lower_lash_line"),
        48: ("r_outer_corner_of_mouth",), 51: ("center_of_cupid_bow",), 54: ("l_outer_corner_of_mouth",),
        57: ("center_of_lower_outer_lip",),
        60: ("r_inner_corner_of_mouth",), 62: ("center_of_upper_inner_lip",), 64: ("l_inner_corner_of_mouth",),
        66: ("center_of_lower_inner_lip",),
    }
    return [(f"face-{i}", known.get(i, ())) for i in range(68)]


def _direct(names) -> list[tuple[str, tuple[str, ...]]]:
    return [(n, (n,)) for n in names]


def _body25() -> list[tuple[str, tuple[str, ...]]]:
    return [
        ("Nose", ("nose",)), ("Neck", ("left_shoulder", "right_shoulder")),
        ("RShoulder", ("right_shoulder",)), ("RElbow", ("right_elbow",)), ("RWrist", ("right_wrist",)),
        ("LShoulder", ("left_shoulder",)), ("LElbow", ("left_elbow",)), ("LWrist", ("left_wrist",)),
        ("MidHip", ("left_hip", "right_hip")),
        ("RHip", ("right_hip",)), ("RKnee", ("right_knee",)), ("RAnkle", ("right_ankle",)),
        ("LHip", ("left_hip",)), ("LKnee", ("left_knee",)), ("LAnkle", ("left_ankle",)),
        ("REye", ("right_eye",)), ("LEye", ("left_eye",)), ("REar", ("right_ear",)), ("LEar", ("left_ear",)),
        ("LBigToe", ("left_big_toe",)), ("LSmallToe", ("left_small_toe",)), ("LHeel", ("left_heel",)),
        ("RBigToe", ("right_big_toe",)), ("RSmallToe", ("right_small_toe",)), ("RHeel", ("right_heel",)),
    ]


def _tables() -> dict[str, list[tuple[str, tuple[str, ...]]]]:
    return {
        "coco17": _direct(_COCO17),
        "coco_wholebody133": _direct(_COCO17) + _direct(_FEET) + _face68() + _hand("left") + _hand("right"),
        "openpose_body25": _body25(),
        "openpose_hand21_left": _hand("left"),
        "openpose_hand21_right": _hand("right"),
        "face68": _face68(),
        "openpose_face70": _face68() + [("face-68", ("r_center_of_pupil",)), ("face-69", ("l_center_of_pupil",))],
    }


FORMAT_NAMES = ("coco17", "coco_wholebody133", "openpose_body25", "openpose_hand21_left", "openpose_hand21_right",
                "face68", "openpose_face70")


@dataclass(frozen=True)
class KeypointFormat:
    name: str
    names: tuple[str, ...]  # target point names, in target order
    sources: tuple[tuple[str, ...], ...]  # 308 names averaged for each target point; () = unavailable
    first: np.ndarray  # (K,) 308 index of the first source (0 where unavailable)
    second: np.ndarray  # (K,) 308 index of the second source (== first for a direct match)
    available: np.ndarray  # (K,) bool

    @property
    def num_keypoints(self) -> int:
        return len(self.names)

    def describe(self) -> list[str]:
        """One line per target point: how it is obtained."""
        lines = []
        for i, (name, src) in enumerate(zip(self.names, self.sources)):
            if not src:
                how = "unavailable (score 0)"
            elif len(src) == 1:
                how = f"direct <- {src[0]}"
            else:
                how = f"midpoint of {' + '.join(src)} (min score)"
            lines.append(f"{i:3d} {name}: {how}")
        return lines


@lru_cache(maxsize=None)
def keypoint_format(name: str) -> KeypointFormat:
    """The named target layout (one of ``FORMAT_NAMES``) with its 308 source indices."""
    tables = _tables()
    if name not in tables:
        raise ValueError(f"unknown keypoint format {name!r}; choose one of {', '.join(FORMAT_NAMES)}")
    all_names = keypoint_info().names
    index = {n: i for i, n in enumerate(all_names)}
    first, second = [], []
    for target, src in tables[name]:
        missing = [s for s in src if s not in index]
        if missing:  # a table typo must fail loudly, never map silently to a wrong point
            raise KeyError(f"format {name!r} point {target!r} names unknown 308 keypoints {missing}")
        if len(src) > 2:
            raise ValueError(f"format {name!r} point {target!r}: at most two sources are supported")
        ids = [index[s] for s in src] or [0]
        first.append(ids[0])
        second.append(ids[-1])
    return KeypointFormat(
        name=name, names=tuple(t for t, _ in tables[name]), sources=tuple(s for _, s in tables[name]),
        first=np.asarray(first, np.int64), second=np.asarray(second, np.int64),
        available=np.asarray([bool(s) for _, s in tables[name]]),
    )


def convert_keypoints(keypoints: np.ndarray, scores: np.ndarray,
                      fmt: str | KeypointFormat) -> tuple[np.ndarray, np.ndarray]:
    """308 keypoints (..., 308, 2) and scores (..., 308) -> the target layout (..., K, 2), (..., K).

    Midpoints average the two coordinates and take the smaller score; unavailable points are (0, 0) with score 0.
    """
    f = keypoint_format(fmt) if isinstance(fmt, str) else fmt
    kp = np.asarray(keypoints)
    sc = np.asarray(scores)
    n = keypoint_info().num_keypoints
    if kp.shape[-2:] != (n, 2) or sc.shape != kp.shape[:-1]:
        raise ValueError(f"expected keypoints (..., {n}, 2) and scores (..., {n}), got {kp.shape} and {sc.shape}")
    dtype = np.result_type(kp.dtype, np.float32)
    out_kp = 0.5 * (kp[..., f.first, :].astype(dtype) + kp[..., f.second, :].astype(dtype))
    out_sc = np.minimum(sc[..., f.first], sc[..., f.second]).astype(np.result_type(sc.dtype, np.float32))
    out_kp[..., ~f.available, :] = 0
    out_sc[..., ~f.available] = 0
    return out_kp, out_sc


def openpose_person(keypoints: np.ndarray, scores: np.ndarray) -> dict[str, list[float]]:
    """One person in OpenPose's JSON layout (flat [x, y, score, ...] lists) from (308, 2) keypoints and (308,) scores:
    ``pose_keypoints_2d`` (BODY_25), ``face_keypoints_2d`` (70), ``hand_left_keypoints_2d`` and
    ``hand_right_keypoints_2d`` (21 each)."""
    parts = {
        "pose_keypoints_2d": "openpose_body25",
        "face_keypoints_2d": "openpose_face70",
        "hand_left_keypoints_2d": "openpose_hand21_left",
        "hand_right_keypoints_2d": "openpose_hand21_right",
    }
    person = {}
    for key, fmt in parts.items():
        kp, sc = convert_keypoints(keypoints, scores, fmt)
        person[key] = np.concatenate([kp, sc[..., None]], axis=-1).astype(np.float64).reshape(-1).tolist()
    return person
