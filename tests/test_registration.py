"""Registration of the reference onto the query: a real lego view turned and shifted by a small
pose error is put back; a planted stain stays in the residual; a large misfit is refused."""

import cv2
import numpy as np
import pytest

from omnipose.compare import register_reference


def turned(image: np.ndarray, degrees: float, shift: tuple[float, float]) -> np.ndarray:
    """image (H, W, 3) turned about its centre and shifted, white outside."""
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    matrix[:, 2] += shift
    return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderValue=(1.0, 1.0, 1.0))


@pytest.fixture(scope="module")
def view(lego_200) -> np.ndarray:
    return lego_200.images[3].numpy().astype(np.float32)


def opacity(image: np.ndarray) -> np.ndarray:
    return (np.abs(image - 1.0).max(-1) > 0.04).astype(np.float32)


@pytest.mark.parametrize("motion", ["euclidean", "affine"])
def test_a_small_pose_error_is_registered_away_and_a_stain_stays(view, motion):
    query = view.copy()
    rows, cols = np.nonzero(opacity(view) > 0)
    centre_r, centre_c = int(rows.mean()), int(cols.mean())
    stain = np.zeros(view.shape[:2], bool)
    stain[centre_r - 6 : centre_r + 6, centre_c - 6 : centre_c + 6] = True
    query[stain] = (0.1, 0.6, 0.9)
    reference = turned(view, 1.5, (2.0, -1.5))  # what a render about 1.5 deg off looks like
    before = np.abs(query - reference).max(-1)
    warped, warped_alpha, warp = register_reference(query, reference, opacity(reference), motion)
    after = np.abs(query - warped).max(-1)
    assert warp is not None
    rest = ~stain & (opacity(view) > 0)
    assert after[rest].mean() < 0.35 * before[rest].mean(), (before[rest].mean(), after[rest].mean())
    assert after[stain].mean() > 0.8 * before[stain].mean(), "a 2-D warp cannot erase a local defect"
    assert warped_alpha.shape == view.shape[:2] and 0.0 <= warped_alpha.min() and warped_alpha.max() <= 1.0
    turn = np.degrees(np.arctan2(warp[1, 0], warp[0, 0]))
    assert abs(abs(turn) - 1.5) < 0.3, f"the warp should undo the 1.5 deg turn, got {turn:.2f}"


def test_a_large_misfit_is_refused(view):
    reference = turned(view, 25.0, (0.0, 0.0))  # a wrong pose: the comparison must show it
    warped, warped_alpha, warp = register_reference(view, reference, opacity(reference), max_rotation_deg=5.0)
    assert warp is None and warped is reference and warped_alpha is not None
    _, _, warp = register_reference(view, turned(view, 4.0, (0.0, 0.0)), opacity(view), max_rotation_deg=5.0)
    assert warp is not None, "a turn within the limit is registered"
    with pytest.raises(ValueError, match="unknown registration motion 'homography'"):
        register_reference(view, reference, opacity(reference), "homography")
