"""Where a detector's comparison gets its normal statistics: a kept calibration, or normal queries."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from omnipose.compare import Calibration, CompareConfig, CompareError, check_signature
from omnipose.core.errors import ConfigError
from omnipose.detector.references import query_view
from omnipose.pose import model_fingerprint, prepare_query

if TYPE_CHECKING:
    from omnipose.detector.detector import Detector
    from omnipose.detector.references import Reference


def stored_calibration(path: Path, config: CompareConfig, field_key: str) -> Calibration | None:
    """The calibration in ``path`` where it was fitted on the field of ``field_key`` with a comparison
    whose residuals are ``config``'s; None where there is none, or it is unreadable or fitted otherwise."""
    if not path.is_file():
        return None
    try:
        calibration = Calibration.load(path)
        check_signature(calibration, config)
    except CompareError:
        return None
    return calibration if calibration.field_key == field_key else None


def pair_batches(images: Sequence[torch.Tensor], references: Sequence["Reference"], with_neighbours: bool
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:  # fmt: skip
    """Normal pairs, images (H, W, 3) each with its reference, as ``Comparator.fit`` takes them: images
    (N, H, W, 3), renders (N, H, W, 3), render opacities (N, H, W) and the re-projected neighbours
    (N, R, H, W, 3), or None ``with_neighbours`` False."""
    return (torch.stack(list(images)), torch.stack([r.image for r in references]),
            torch.stack([r.alpha[0] for r in references]),
            torch.stack([r.neighbours for r in references]) if with_neighbours else None)


def calibrate_on_queries(detector: "Detector", images: Sequence[str | Path | np.ndarray], progress: bool = True
                         ) -> Calibration:  # fmt: skip
    """Fit the fitted ``detector``'s normal statistics on normal queries in place of training views: each
    image (the defect-free object, without a pose) posed as a query is and paired with the reference at
    that pose. Sets and returns the calibration; the one beside the checkpoint stays as it was.

    For queries unlike the training views in more than their pose (photographs against a field from
    renders): their noise, tones and the pose search's error are normal there, and no training view
    shows them, so the training views' statistics read all of it as defect."""
    if len(images) < 2:
        raise ConfigError(f"{len(images)} normal queries are too few to calibrate on: give at least 2.")
    queries, references = [], []
    for image in tqdm(images, desc="posing normal queries for calibration", disable=not progress, leave=False):
        query, _ = prepare_query(image, detector.info, detector.config.pose.foreground_threshold,
                                 detector.config.query_focal)
        reference = detector.reference_at(detector.estimate_pose(query).c2w)
        queries.append(query_view(image, query, detector.info, detector.config).in_frame(reference))
        references.append(reference)
    pairs = pair_batches(queries, references, detector.normal_views is not None)
    calibration = detector.comparator.fit(*pairs, progress=progress)
    calibration.field_key = model_fingerprint(detector.model)
    return calibration
