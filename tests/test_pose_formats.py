import numpy as np
import pytest

from sapiens2.data.specs import keypoint_info
from sapiens2.tasks.pose.formats import FORMAT_NAMES, convert_keypoints, keypoint_format, openpose_person


@pytest.fixture(scope="module")
def pose308():
    rng = np.random.default_rng(0)
    return rng.uniform(0, 500, size=(2, 308, 2)).astype(np.float32), rng.uniform(0.1, 1, size=(2, 308)).astype(np.float32)


def idx(name):
    return keypoint_info().index(name)


def test_coco17_direct_names(pose308):
    kp, sc = pose308
    out, out_sc = convert_keypoints(kp, sc, "coco17")
    assert out.shape == (2, 17, 2) and out_sc.shape == (2, 17)
    assert keypoint_format("coco17").names[9] == "left_wrist"
    np.testing.assert_array_equal(out[:, 9], kp[:, idx("left_wrist")])
    np.testing.assert_array_equal(out_sc[:, 10], sc[:, idx("right_wrist")])
    np.testing.assert_array_equal(out[:, 0], kp[:, idx("nose")])


def test_body25_midpoints_with_min_score(pose308):
    kp, sc = pose308
    out, out_sc = convert_keypoints(kp, sc, "openpose_body25")
    assert out.shape == (2, 25, 2)
    ls, rs, lh, rh = idx("left_shoulder"), idx("right_shoulder"), idx("left_hip"), idx("right_hip")
    np.testing.assert_allclose(out[:, 1], (kp[:, ls] + kp[:, rs]) / 2, rtol=1e-6)  # Neck
    np.testing.assert_array_equal(out_sc[:, 1], np.minimum(sc[:, ls], sc[:, rs]))
    np.testing.assert_allclose(out[:, 8], (kp[:, lh] + kp[:, rh]) / 2, rtol=1e-6)  # MidHip
    np.testing.assert_array_equal(out[:, 4], kp[:, idx("right_wrist")])  # RWrist
    np.testing.assert_array_equal(out[:, 24], kp[:, idx("right_heel")])  # RHeel


def test_hands_order_base_to_tip(pose308):
    kp, sc = pose308
    left, _ = convert_keypoints(kp, sc, "openpose_hand21_left")
    right, _ = convert_keypoints(kp, sc, "openpose_hand21_right")
    assert left.shape == right.shape == (2, 21, 2)
    np.testing.assert_array_equal(left[:, 0], kp[:, idx("left_wrist")])
    np.testing.assert_array_equal(left[:, 1], kp[:, idx("left_thumb_third_joint")])  # CMC
    np.testing.assert_array_equal(left[:, 4], kp[:, idx("left_thumb4")])  # tip
    np.testing.assert_array_equal(right[:, 5], kp[:, idx("right_forefinger_third_joint")])  # index MCP
    np.testing.assert_array_equal(right[:, 20], kp[:, idx("right_pinky_finger4")])


def test_wholebody_and_faces(pose308):
    kp, sc = pose308
    out, out_sc = convert_keypoints(kp, sc, "coco_wholebody133")
    assert out.shape == (2, 133, 2)
    np.testing.assert_array_equal(out[:, 17], kp[:, idx("left_big_toe")])
    np.testing.assert_array_equal(out[:, 23 + 8], kp[:, idx("tip_of_chin")])
    np.testing.assert_array_equal(out[:, 91], kp[:, idx("left_wrist")])
    np.testing.assert_array_equal(out[:, 112], kp[:, idx("right_wrist")])
    # jaw points other than the chin have no counterpart: zero location, zero score
    assert np.all(out_sc[:, 23 + 0] == 0) and np.all(out[:, 23 + 0] == 0)
    face, face_sc = convert_keypoints(kp, sc, "openpose_face70")
    assert face.shape == (2, 70, 2)
    np.testing.assert_array_equal(face[:, 68], kp[:, idx("r_center_of_pupil")])
    np.testing.assert_array_equal(face[:, 48], kp[:, idx("r_outer_corner_of_mouth")])
    fmt = keypoint_format("face68")
    assert fmt.num_keypoints == 68 and fmt.available.sum() == 22
    assert "unavailable" in fmt.describe()[0] and "midpoint" in fmt.describe()[36]


def test_all_formats_shapes_and_single_person(pose308):
    kp, sc = pose308
    sizes = {"coco17": 17, "coco_wholebody133": 133, "openpose_body25": 25, "openpose_hand21_left": 21,
             "openpose_hand21_right": 21, "face68": 68, "openpose_face70": 70}
    assert set(FORMAT_NAMES) == set(sizes)
    for name, k in sizes.items():
        out, out_sc = convert_keypoints(kp[0], sc[0], name)
        assert out.shape == (k, 2) and out_sc.shape == (k,)
    person = openpose_person(kp[0], sc[0])
    assert {key: len(v) for key, v in person.items()} == {
        "pose_keypoints_2d": 75, "face_keypoints_2d": 210, "hand_left_keypoints_2d": 63,
        "hand_right_keypoints_2d": 63}
    assert person["pose_keypoints_2d"][2] == pytest.approx(float(sc[0, idx("nose")]))


def test_errors():
    with pytest.raises(ValueError, match="unknown keypoint format"):
        keypoint_format("coco18")
    with pytest.raises(ValueError, match="308"):
        convert_keypoints(np.zeros((17, 2)), np.zeros(17), "coco17")
