"""Register the rendered reference onto the query in the image plane before comparing them.

iNeRF leaves some queries a degree or two off (dark, near-box objects give the photometric loss
little to hold on to). At that size the error is mostly an in-plane shift and turn of the whole
object, which leaves lines of residual along every edge. One rigid (or affine) 2-D warp of the
reference, fitted by OpenCV's ECC on the object region, removes most of it; a warp with 3 to 6
parameters cannot bend itself around a local defect, so defects stay in the residual.

Images follow the project convention: float (H, W, 3) in [0, 1].
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from omnipose.core.image import dilate, foreground_mask, invert_affine, warp_image

MOTIONS = {"translation": cv2.MOTION_TRANSLATION, "euclidean": cv2.MOTION_EUCLIDEAN, "affine": cv2.MOTION_AFFINE}


def register_reference(
    query: np.ndarray,
    reference: np.ndarray,
    alpha: np.ndarray,
    motion: str = "euclidean",
    max_shift_fraction: float = 0.05,
    max_rotation_deg: float = 5.0,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Warp ``reference`` (H, W, 3) and its opacity ``alpha`` (H, W) onto ``query`` (H, W, 3).

    The warp maximises ECC between the grey images over the region either image shows the object
    in (grown by 4 px). It is refused (inputs returned unchanged, warp None) when ECC fails or when
    it moves the object more than ``max_shift_fraction`` of the image or turns it more than
    ``max_rotation_deg``: that is a wrong pose, not a small error, and the comparison should show it.
    Returns (reference, alpha, warp), warp the (2, 3) affine that moved the reference (reference pixel ->
    query pixel, centres at +0.5, for ``core.image.warp_image``) or None; uncovered borders get the background colour.
    """
    if motion not in MOTIONS:
        raise ValueError(f"unknown registration motion '{motion}'; use one of {tuple(MOTIONS)}.")
    height, width = query.shape[:2]
    query_grey = cv2.cvtColor(np.ascontiguousarray(query, dtype=np.float32), cv2.COLOR_RGB2GRAY)
    reference_grey = cv2.cvtColor(np.ascontiguousarray(reference, dtype=np.float32), cv2.COLOR_RGB2GRAY)
    shown = foreground_mask(query, background) | (alpha > 0.5)
    if not shown.any():  # nothing to align on
        return reference, alpha, None
    region = dilate(shown, 4, shape="square").astype(np.uint8)
    warp = np.eye(2, 3, dtype=np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-5)
    try:
        _, warp = cv2.findTransformECC(query_grey, reference_grey, warp, MOTIONS[motion], criteria, region, 5)
    except cv2.error:  # ECC did not converge (flat images, tiny objects)
        return reference, alpha, None
    rows, cols = np.nonzero(shown)
    centre = np.array([cols.mean(), rows.mean()], dtype=np.float32)
    shift = float(np.linalg.norm(warp[:, :2] @ centre + warp[:, 2] - centre))  # how far the object's centre moves
    rotation = math.degrees(abs(math.atan2(float(warp[1, 0]), float(warp[0, 0]))))
    if not np.isfinite(warp).all() or shift > max_shift_fraction * max(height, width) or rotation > max_rotation_deg:
        return reference, alpha, None
    affine = _ecc_to_affine(warp)
    return warp_image(reference, affine, background), warp_image(alpha, affine, 0.0), affine



def _ecc_to_affine(warp: np.ndarray) -> np.ndarray:
    """ECC's warp (query pixel -> reference pixel, centres on integers) as the affine that moves the
    reference onto the query in omnipose's pixel convention (centres at +0.5)."""
    to_integer = np.array([[1.0, 0.0, -0.5], [0.0, 1.0, -0.5], [0.0, 0.0, 1.0]])
    to_centre = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    query_to_reference = to_centre @ np.vstack([warp.astype(np.float64), [0.0, 0.0, 1.0]]) @ to_integer
    return invert_affine(query_to_reference[:2])
