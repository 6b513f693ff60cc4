"""Visualisation: shapes, dtypes and colours at known pixels."""
import cv2
import numpy as np
import pytest

from sapiens2.data.specs import keypoint_info, seg_classes
from sapiens2.visualization import (CHROMA_GREEN, albedo_to_uint8, colorize_segmentation, default_sizes,
                                    depth_to_rgb, draw_poses, mask_to_uint8, matte_composite, matte_cutout,
                                    normals_to_rgb, overlay_segmentation, track_colour)


def grey(h=40, w=60, value=100):
    return np.full((h, w, 3), value, np.uint8)


def test_seg_overlay_blends_palette():
    palette = seg_classes().palette
    image = grey()
    labels = np.zeros((40, 60), np.int64)
    labels[10:20, 10:20] = 3
    labels[30:, 50:] = 28
    before = image.copy()
    out = overlay_segmentation(image, labels, alpha=0.25)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(image, before)  # input untouched
    expected3 = np.rint(0.75 * 100 + 0.25 * palette[3].astype(np.float64)).astype(np.uint8)
    np.testing.assert_array_equal(out[15, 15], expected3)
    np.testing.assert_array_equal(out[35, 55], np.rint(75 + 0.25 * palette[28].astype(np.float64)))
    np.testing.assert_array_equal(out[0, 0], (100, 100, 100))  # background keeps the image
    with_bg = overlay_segmentation(image, labels, alpha=1.0, include_background=True)
    np.testing.assert_array_equal(with_bg[0, 0], palette[0])
    np.testing.assert_array_equal(with_bg[15, 15], palette[3])
    np.testing.assert_array_equal(colorize_segmentation(labels), palette[labels])


def test_seg_overlay_lookup_equals_blending_every_pixel():
    """The overlay's lookup table gives the bytes of the per-pixel float32 blend, every image value, class and
    channel, with and without the background, for several alphas."""
    palette = seg_classes().palette.astype(np.uint8)
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (29, 256, 3), dtype=np.uint8)
    image[:, :, 0] = np.arange(256, dtype=np.uint8)  # every value in every class's row
    labels = np.repeat(np.arange(29)[:, None], 256, axis=1)
    for alpha in (0.5, 0.3, 0.77):
        blended = np.rint((1.0 - alpha) * image.astype(np.float32) + alpha * palette[labels].astype(np.float32))
        np.testing.assert_array_equal(overlay_segmentation(image, labels, alpha=alpha, include_background=True),
                                      blended.astype(np.uint8))
        keep = np.where((labels > 0)[..., None], blended.astype(np.uint8), image)
        np.testing.assert_array_equal(overlay_segmentation(image, labels, alpha=alpha), keep)


def test_seg_legend_and_errors():
    palette = seg_classes().palette
    labels = np.zeros((120, 80), np.int32)
    labels[:40] = 4
    labels[40:80] = 11
    out = overlay_segmentation(grey(120, 80), labels, legend=True)
    assert out.shape[0] == 120 and out.shape[1] > 80 and out.dtype == np.uint8
    panel = out[:, 80:].reshape(-1, 3)
    for cid in (4, 11):
        assert (panel == palette[cid]).all(axis=1).any()  # swatch of each present class
    assert not (panel == palette[2]).all(axis=1).any()  # absent class not listed
    with pytest.raises(ValueError, match="shape"):
        overlay_segmentation(grey(), np.zeros((10, 10), np.int64))
    with pytest.raises(ValueError, match=r"\[0, 28\]"):
        overlay_segmentation(grey(), np.full((40, 60), 29))
    with pytest.raises(ValueError, match="integer"):
        overlay_segmentation(grey(), np.zeros((40, 60), np.float32))


def test_legend_lists_every_present_class_in_a_panel_of_fixed_width():
    from sapiens2.visualization.seg import legend_width

    palette, names = seg_classes().palette, seg_classes().names
    for height in (256, 600, 1024):
        labels = np.zeros((height, 50), np.int32)
        labels[:, 10:] = np.arange(1, 29)[np.arange(height) % 28][:, None]  # all 28 body classes present
        out = overlay_segmentation(grey(height, 50), labels, legend=True)
        assert out.shape == (height, 50 + legend_width(height), 3)
        panel = out[:, 50:].reshape(-1, 3)
        for cid in range(1, 29):  # a swatch for each class, none cut off for lack of rows
            assert (panel == palette[cid]).all(axis=1).sum() >= 4, (height, names[cid])
        few = overlay_segmentation(grey(height, 50), np.where(labels == 3, 3, 0), legend=True)
        assert few.shape == out.shape  # the same width whatever is present: video frames keep one size
        # every name is inside the panel: its right-most column is blank
        assert out[:, -1].max() == 0


def _one_link_pose():
    info = keypoint_info()
    a, b = info.skeleton[0]
    keypoints = np.full((308, 2), -100.0)
    scores = np.zeros(308)
    keypoints[a], keypoints[b] = (20.0, 100.0), (180.0, 100.0)
    scores[a] = scores[b] = 0.9
    return info, a, b, keypoints, scores


def test_keypoints_and_skeleton_colours():
    info, a, b, keypoints, scores = _one_link_pose()
    image = grey(200, 200, 0)
    out = draw_poses(image, keypoints, scores, radius=4, thickness=3)
    assert out.shape == (200, 200, 3) and out.dtype == np.uint8 and image.max() == 0
    np.testing.assert_array_equal(out[100, 20], info.colors[a])  # keypoint centre
    np.testing.assert_array_equal(out[100, 180], info.colors[b])
    np.testing.assert_array_equal(out[100, 100], info.skeleton_colors[0])  # middle of the link
    assert out[60, 100].max() == 0  # nothing elsewhere
    scores[b] = 0.2  # below threshold: the point and its link disappear
    out = draw_poses(image, keypoints[None], scores[None], threshold=0.3, radius=4, thickness=3)
    np.testing.assert_array_equal(out[100, 20], info.colors[a])
    assert out[100, 180].max() == 0 and out[100, 100].max() == 0
    out = draw_poses(image, keypoints, scores, threshold=0.1, radius=4, thickness=3, draw_skeleton=False)
    assert out[100, 180].max() > 0 and out[100, 100].max() == 0


def test_pose_sizes_scale_with_image():
    small, large = default_sizes(256, 192), default_sizes(4096, 3072)
    assert small[0] >= 1 and small[1] >= 1 and large[0] > 3 * small[0] and large[1] > 3 * small[1]
    assert default_sizes(1024, 768) == (3, 2)
    info, a, b, keypoints, scores = _one_link_pose()
    small_img = draw_poses(grey(200, 200, 0), keypoints, scores)
    big_img = draw_poses(grey(2000, 2000, 0), keypoints * 10, scores)
    painted = lambda img, sl: int((img[sl].max(axis=-1) > 0).sum())  # noqa: E731
    # keypoint discs (a square around keypoint a, left of where the link starts) grow with the image
    assert painted(big_img, np.s_[960:1040, 150:200]) > 10 * painted(small_img, np.s_[96:104, 15:20]) > 0
    # so does the link's width across its middle
    assert painted(big_img, np.s_[:, 1000]) >= 2 * painted(small_img, np.s_[:, 100]) > 0


def test_boxes_and_track_ids():
    info, a, b, keypoints, scores = _one_link_pose()
    boxes = np.array([[10.0, 60.0, 190.0, 150.0]])
    out = draw_poses(grey(200, 200, 0), keypoints, scores, boxes=boxes, track_ids=[7], thickness=3)
    np.testing.assert_array_equal(out[105, 10], track_colour(7))  # left edge of the box
    assert out[40:56, 10:60].max() > 0  # the "id 7" label above the box
    # without tracks each person still gets its own colour and its index (the pose JSON's "id") as label
    plain = draw_poses(grey(200, 200, 0), keypoints, scores, boxes=boxes, thickness=3)
    np.testing.assert_array_equal(plain[105, 10], track_colour(0))
    assert plain[40:56, 10:60].max() > 0
    assert track_colour(1) != track_colour(2) and track_colour(5) == track_colour(5)
    with pytest.raises(ValueError, match="308"):
        draw_poses(grey(), np.zeros((17, 2)))
    with pytest.raises(ValueError, match="boxes"):
        draw_poses(grey(), keypoints, scores, boxes=np.zeros((2, 4)))


def test_normals_to_rgb():
    normals = np.zeros((2, 3, 3), np.float32)
    normals[0, 0] = (0, 0, 1)
    normals[0, 1] = (-1, 1, 0)
    normals[0, 2] = (2, -3, 0.5)  # clipped
    normals[1, 0] = (np.nan, 0, 1)
    mask = np.ones((2, 3), bool)
    mask[1, 1] = False
    out = normals_to_rgb(normals, mask)
    assert out.shape == (2, 3, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0], [[128, 128, 255], [0, 255, 128], [255, 0, 191]])
    np.testing.assert_array_equal(out[1, :2], [[0, 0, 0], [0, 0, 0]])  # NaN and masked -> black
    np.testing.assert_array_equal(out[1, 2], [128, 128, 128])


def test_depth_near_is_warm_and_background_masked():
    depth = np.array([[1.0, 2.0, 3.0], [5.0, np.inf, 9.0]], np.float32)
    mask = np.ones_like(depth, bool)
    mask[1, 2] = False
    out = depth_to_rgb(depth, mask)
    lut = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[None], cv2.COLORMAP_INFERNO)[0, :, ::-1]
    np.testing.assert_array_equal(out[0, 0], lut[255])  # nearest
    np.testing.assert_array_equal(out[1, 0], lut[0])  # farthest valid (5)
    np.testing.assert_array_equal(out[0, 1], lut[191])  # (5 - 2) / 4 * 255 = 191.25
    assert out[0, 0, 0] > out[0, 0, 2]  # near: red > blue
    np.testing.assert_array_equal(out[1, 1:], [[0, 0, 0], [0, 0, 0]])
    fixed = depth_to_rgb(depth, value_range=(0.0, 2.0))
    np.testing.assert_array_equal(fixed[1, 0], lut[0])  # beyond far clips
    np.testing.assert_array_equal(fixed[0, 0], lut[128])  # 1 of 0..2 -> 127.5 -> 128
    flat = depth_to_rgb(np.full((2, 2), 3.0))
    assert flat.shape == (2, 2, 3) and (flat == lut[255]).all()


def test_albedo_and_mask():
    albedo = np.array([[[0.5, 1.2, -0.1], [0.0, 0.25, 1.0]]], np.float32)
    out = albedo_to_uint8(albedo, np.array([[True, False]]))
    np.testing.assert_array_equal(out, [[[128, 255, 0], [0, 0, 0]]])
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(mask_to_uint8(np.array([[True, False]])), [[255, 0]])
    np.testing.assert_array_equal(mask_to_uint8(np.array([[0.5, 2.0]])), [[128, 255]])


def test_matting_cutout_and_composite():
    image = np.array([[[200, 100, 50], [200, 100, 50], [10, 20, 30]]], np.uint8)
    alpha = np.array([[1.0, 0.0, 0.5]], np.float32)
    cut = matte_cutout(image, alpha)
    assert cut.shape == (1, 3, 4) and cut.dtype == np.uint8
    np.testing.assert_array_equal(cut[..., :3], image)
    np.testing.assert_array_equal(cut[..., 3], [[255, 0, 128]])
    comp = matte_composite(image, alpha)
    np.testing.assert_array_equal(comp[0, 0], image[0, 0])
    np.testing.assert_array_equal(comp[0, 1], CHROMA_GREEN)
    np.testing.assert_array_equal(comp[0, 2], np.rint(0.5 * image[0, 2] + 0.5 * np.array(CHROMA_GREEN)))
    # the model's pre-multiplied foreground: composite = fg + (1 - alpha) * bg
    foreground = np.zeros((1, 3, 3), np.float32)
    foreground[0, 2] = (0.25, 0.1, 0.0)
    comp = matte_composite(image, alpha, foreground=foreground, background=(255, 255, 255))
    np.testing.assert_array_equal(comp[0, 2], np.rint(np.array([0.25, 0.1, 0.0]) * 255 + 127.5))
    cut = matte_cutout(image, (alpha * 255).astype(np.uint8), foreground=foreground)
    np.testing.assert_array_equal(cut[0, 2, :3], np.rint(np.array([0.25, 0.1, 0.0]) * 255 / (127 / 255)))
    background = np.zeros_like(image)
    np.testing.assert_array_equal(matte_composite(image, alpha, background=background)[0, 1], (0, 0, 0))
    with pytest.raises(ValueError, match="alpha"):
        matte_composite(image, np.ones((2, 2)))


def test_low_score_points_not_drawn_and_people_coloured_apart():
    from sapiens2.visualization.pose import KEYPOINT_SCORE_THRESHOLD

    info, a, b, keypoints, scores = _one_link_pose()
    two = np.stack([keypoints, keypoints + (0.0, 60.0)])
    sc = np.stack([scores, scores])
    sc[1, b] = KEYPOINT_SCORE_THRESHOLD  # not above the threshold: not drawn
    boxes = np.array([[10.0, 80.0, 190.0, 120.0], [10.0, 140.0, 190.0, 180.0]])
    out = draw_poses(grey(200, 200, 0), two, sc, boxes=boxes, radius=4, thickness=3)
    np.testing.assert_array_equal(out[160, 180], (0, 0, 0))
    np.testing.assert_array_equal(out[160, 20], info.colors[a])
    np.testing.assert_array_equal(out[100, 180], info.colors[b])
    np.testing.assert_array_equal(out[110, 10], track_colour(0))
    np.testing.assert_array_equal(out[170, 10], track_colour(1))
    assert track_colour(0) != track_colour(1)


@pytest.mark.parametrize("box", [(185.0, 2.0, 199.0, 60.0), (-30.0, -20.0, 40.0, 199.0), (150.0, 195.0, 199.0, 199.0)])
def test_person_label_stays_inside_the_image(box):
    """People at the image edge: the label is moved into the frame, drawn whole on a patch of the person's colour."""
    from sapiens2.visualization.pose import label_box

    info, a, b, keypoints, scores = _one_link_pose()
    out = draw_poses(grey(200, 200, 0), keypoints, scores, boxes=np.array([box]), track_ids=[12], thickness=2)
    font_scale = max(0.4, 200 / 1500)
    left, top, right, bottom = label_box("id 12", box, (200, 200), font_scale, 2)
    assert 0 <= left < right <= 200 and 0 <= top < bottom <= 200 and right - left > 20
    patch = out[top:bottom, left:right].reshape(-1, 3)
    assert (patch == track_colour(12)).all(axis=1).mean() > 0.3  # the label's background
    assert ((patch != track_colour(12)).any(axis=1)).sum() > 10  # and its text
