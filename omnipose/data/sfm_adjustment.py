"""The final bundle adjustment of an onboarding, checked against the mapping it starts from.

``checked_final_adjustment`` refines each track's keypoints (``keypoint_refinement``), adjusts to
convergence (``final_bundle_adjustment``) and refuses a result that threw cameras off
(``sfm_checks.moved_cameras``). pycolmap and the config are passed in by ``omnipose.data.sfm``.
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from omnipose.data.keypoint_refinement import refine_reconstruction
from omnipose.data.sfm_checks import FoldedMappingError, moved_cameras

if TYPE_CHECKING:
    from omnipose.data.sfm import OnboardConfig


def final_bundle_adjustment(pycolmap, reconstruction, config: OnboardConfig, fixed_focal: bool) -> None:
    """A global bundle adjustment run to convergence (the mapper's stops early to save time)."""
    if config.final_ba_iterations == 0:
        return
    options = pycolmap.BundleAdjustmentOptions()
    options.print_summary = False
    options.refine_focal_length = not fixed_focal
    options.refine_principal_point = False
    if config.final_ba_loss_px > 0:
        options.ceres.loss_function_type = pycolmap.LossFunctionType.CAUCHY
        options.ceres.loss_function_scale = config.final_ba_loss_px
    solver = options.ceres.solver_options
    solver.max_num_iterations = config.final_ba_iterations
    solver.function_tolerance = solver.gradient_tolerance = solver.parameter_tolerance = 1e-12
    solver.num_threads = config.num_threads
    pycolmap.bundle_adjustment(reconstruction, options)


def camera_poses(reconstruction) -> dict[str, np.ndarray]:
    """Camera-to-world (4, 4), in COLMAP's axes, of each registered image by name."""
    poses = {}
    for image in reconstruction.images.values():
        if image.has_pose:
            pose = np.eye(4)
            pose[:3] = image.cam_from_world().matrix()
            poses[image.name] = np.linalg.inv(pose)
    return poses


def checked_final_adjustment(pycolmap, reconstruction, images_dir: Path, config: OnboardConfig) -> tuple[object, dict]:
    """The keypoint refinement and the final bundle adjustment of a mapping, refused where they threw cameras off.

    A consistent mapping moves by a fraction of a degree in its final adjustment, so its result is checked
    against the mapping (``moved_cameras``, and the reprojection error no more than doubled). Now and then
    (once in 7 onboardings of the lego views measured) the adjustment diverges: a camera turned half a
    circle, a reprojection error of 1e150 px; it is then done again without the keypoint refinement.
    Cameras that drift by degrees while the reprojection error holds say that the mapping itself does not
    hold together (a plain, symmetric figure's sides matched and folded onto each other: 3-5 cameras moved
    2-6 deg), and so does a second failure: ``FoldedMappingError``, naming the cameras (``run_sfm`` then maps
    again with the next seed).
    Returns (reconstruction, stats): 'keypoint_refinement',
    'final_adjustment' (what was kept, and why) and 'timings'."""
    if config.final_ba_iterations == 0:
        return reconstruction, {"keypoint_refinement": {}, "final_adjustment": "none (final_ba_iterations is 0)",
                                "timings": {}}
    mapped = pycolmap.Reconstruction(reconstruction)
    mapped.update_point_3d_errors()
    before, error_before = camera_poses(mapped), mapped.compute_mean_reprojection_error()
    timings, problems, thrown_off = {}, [], {}

    def kept_stats(refinement: dict, note: str) -> dict:
        steps = "keypoints refined, then adjusted" if refinement else "adjusted"
        return {"keypoint_refinement": {k: v for k, v in refinement.items() if k != "seconds"},
                "final_adjustment": f"{steps}{note}", "timings": timings}

    for refine in (True, False) if config.refine_keypoints else (False,):
        adjusted = pycolmap.Reconstruction(mapped)
        refinement = refine_reconstruction(adjusted, images_dir, config.keypoint_max_shift,
                                           config.max_image_size) if refine else {}  # fmt: skip
        if refine:
            timings["keypoint_refinement_s"] = refinement.get("seconds", 0.0)
        start = time.perf_counter()
        final_bundle_adjustment(pycolmap, adjusted, config, config.focal is not None)
        timings["bundle_adjustment_s"] = timings.get("bundle_adjustment_s", 0.0) + time.perf_counter() - start
        adjusted.update_point_3d_errors()
        error = adjusted.compute_mean_reprojection_error()
        moved = moved_cameras(before, camera_poses(adjusted))
        blew_up = not np.isfinite(error) or error > 2 * error_before + 0.5
        if not blew_up and not moved:
            return adjusted, kept_stats(refinement, f", after {'; '.join(problems)}" if problems else "")
        thrown_off.update(moved)
        listed = ", ".join(f"{name} ({deg:.1f} deg, {100 * shift:.0f} %)"
                           for name, (deg, shift) in list(moved.items())[:5])  # fmt: skip
        more = f" and {len(moved) - 5} more" if len(moved) > 5 else ""
        what = "the adjustment of refined keypoints" if refinement else "the adjustment"
        problems.append(f"{what} was refused (reprojection error {error:.3g} px against {error_before:.3g} before; "
                        f"cameras thrown off: {listed or 'none'}{more})")
        diverged = blew_up or any(deg > 90 or shift > 1 for deg, shift in moved.values())
        if not (refinement and diverged):  # cameras that drift by degrees: the mapping itself does not hold together
            break
        warnings.warn(f"onboard: {problems[-1]}; adjusting again without the keypoint refinement.", stacklevel=3)
    drifted = None
    if not diverged:
        moves = ", ".join(f"{name} {deg:.1f} deg" for name, (deg, _) in moved.items())
        stats = kept_stats(refinement, f"; the adjustment moved {moves} (reprojection error {error_before:.3g} -> "
                                       f"{error:.3g} px)")
        stats["moved_cameras"] = {name: [round(deg, 2), round(shift, 4)] for name, (deg, shift) in moved.items()}
        drifted = (adjusted, stats)
    raise FoldedMappingError(
        sorted(thrown_off),
        f"the reconstruction does not hold together: its final bundle adjustment moved cameras far from where the "
        f"mapping put them ({'; '.join(problems)}). On a plain or symmetric object, matches between its sides fold "
        "the cameras onto each other. Photograph the object on a textured surface (a printed page, a marked "
        "turntable) or with more of its texture in view, and remove the named photos if they show a side alone.",
        drifted,
    )
