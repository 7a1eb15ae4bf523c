"""``Detector``: the whole method behind one object — fit once on normal views, then predict.

``fit`` trains (or loads) the object's radiance field, builds the pose estimator (training-view
features computed once), renders the field's depth at every training view (``reproject.py``) and
calibrates the comparison on normal data only (training views against the field's render at their
own poses and the other training views re-projected there). ``predict`` then serves any number of
queries with the model loaded once: pose from nothing, normal reference rendered at that pose
with the nearest training views re-projected to it, anomaly map and image score in units of
normal standard deviations.

Each prediction carries a decision, ``anomalous``, at a threshold set from normal data alone (the
calibration's normal views, ``false_alarm_rate``); a query whose pose cannot be trusted (another
object, a view the field cannot explain) is decided anomalous, for a person to look at, rather
than scored as normal. ``predict`` and ``detect_class`` (``batch.py``) give every query a result or
a recorded failure.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from omnipose.compare import (
    MOTIONS,
    Calibration,
    Comparator,
    CompareConfig,
    ComparisonResult,
    NormalViews,
)
from omnipose.core.config import Config, fraction, non_negative, one_of, optional_positive, positive, require
from omnipose.core.device import pick_device
from omnipose.core.errors import CheckpointError, ConfigError, OmniposeError
from omnipose.core.geometry import scale_intrinsics
from omnipose.core.image import compose_affine, image_width, invert_affine, resize_to_width, warp_image
from omnipose.data import MADClass, PosedImages, open_mad_class
from omnipose.detector.batch import QueryFailure, detect_class, predict_many
from omnipose.detector.calibration import pair_batches, stored_calibration
from omnipose.detector.references import (
    QueryView,
    Reference,
    best_reference,
    cached_normal_views,
    candidate_poses,
    make_reference,
    query_view,
    registered_reference,
)
from omnipose.nerf import CheckpointInfo, TrainConfig, load_checkpoint, train_model
from omnipose.pose import (
    PoseConfig,
    PoseEstimator,
    PoseResult,
    feature_cache_path,
    model_fingerprint,
    prepare_query,
    query_zoom,
    zoom_affine,
)


@dataclass
class DetectorConfig(Config):
    """Everything one detector needs; the defaults run on 2 CPU cores at 400x400."""

    image_size: int = 400
    """Working image width in pixels (MAD ships 800x800; PAD works at 400): the field is trained, and
    the reference rendered and compared, at this width. 400 finds defects of a few dozen pixels that
    200 blurs away, at about the same time per query (the pose is searched at ``pose_size``) but a
    longer fit and twice the memory."""
    pose_size: int | None = 200
    """Width at which the pose is searched (retrieval, alignment, iNeRF) when it is below
    ``image_size``: searched at 200 pixels, poses land within a fraction of a degree on the
    benchmarks, at a quarter of the rendering a search at 400 costs; only the final reference is
    rendered at ``image_size``. None: ``image_size``."""
    dataset: str = "MAD-Sim"
    """Dataset name: checkpoints go to ``<ckpt_root>/<dataset>/<class>/``."""
    ckpt_root: str = "ckpts"
    """Folder of the checkpoints (one per dataset and class)."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Training of the radiance field, when the class has no finished checkpoint."""
    pose: PoseConfig = field(default_factory=PoseConfig)
    """Pose estimation of each query."""
    compare: CompareConfig = field(default_factory=CompareConfig)
    """Comparison of each query with its normal reference."""
    calibration_views: int = 40
    """Training views rendered for calibration (spread evenly)."""
    held_out_views: int = 0
    """Training views kept out of the field's training (spread evenly) and run as queries once the
    detector is fitted: the field renders the views it learnt from closer to their photographs than
    any new view (at 400 px enough to put 6 % of normal queries above a threshold set for 1 %), and
    these normal views it never saw say by how much (``Calibration.score_threshold``). Only for a field
    trained here on at least four times as many views. 0 (every view trains the field) by default:
    with 8 of 80 held out, fewer false alarms were bought with less recall and, on some objects, a
    field that found defects less well."""
    pose_candidates: int = 3
    """Poses compared per query: the best by photometric residual and distinct runners-up; the one
    whose reference explains the query best (lowest score) wins, because on dark or near-symmetric
    objects a wrong pose can win the residual by a hair. One with ``pose.rank_by_chromaticity`` or
    ``pose.structure_align``: under another light the colour residual ranks the runners-up."""
    candidate_residual_ratio: float = 1.25
    """A runner-up is compared when its pose residual is within this factor of the best one's (>= 1)."""
    candidate_separation_deg: float = 2.0
    """A runner-up is compared only this many degrees away from every pose already taken: the lowest
    of several noisy scores of near twins would only pull small defects down."""
    register_reference: str | None = "euclidean"
    """2-D warp of each reference onto the query before comparing ('euclidean', 'affine',
    'translation', or None for none): removes what is left of a pose a degree or two off
    (``omnipose.compare.register_reference``)."""
    false_alarm_rate: float = 0.01
    """Target share of normal objects decided anomalous: the decision threshold is the image score
    that at most this fraction of the calibration's normal views exceed (normal data only)."""
    review_uncertain_poses: bool = True
    """Decide a query anomalous, for a person to look at, when its pose cannot be trusted, whatever its
    score: an image of another object, or a view the field cannot explain, must not pass as normal.
    False decides on the score alone (fewer false alarms where poses are often flagged, at the price
    of that guarantee); the flag stays in every output either way."""
    min_field_psnr: float = 16.0
    """The field must render its own training views at least this well (PSNR, dB) to be used: a
    field trained for a few steps would pose and score every query, and every score would be
    noise. The default refuses fields stopped within their first few dozen steps only."""
    replace_backdrop: bool = True
    """Replace a plain backdrop around the object (a paper sweep, a light tent, a wall of any colour)
    by the background colour in the training views, and so in the queries, which follow the field.
    False keeps it: the field learns the backdrop as part of the object (an ablation, or views whose
    object and surroundings share colours)."""
    query_focal: float | None = None
    """Focal length of the queries in pixels at their own width, when their lens differs from the
    training views' (a zoom, another camera): each query is scaled about its centre to the model's
    focal length first. None: the ratio of the 35 mm focal lengths in the EXIF of the query and of the
    first training photo where both have one, else the training views' focal length."""
    device: str | None = None
    """Torch device ('cpu', 'cuda', 'cuda:1'); None: CUDA when present."""

    def check(self) -> None:
        positive(self, "image_size", "calibration_views", "pose_candidates")
        non_negative(self, "held_out_views")
        optional_positive(self, "pose_size", "query_focal")
        for name in ("image_size", "pose_size"):
            value = getattr(self, name)
            require(self, name, value is None or (isinstance(value, int) and not isinstance(value, bool)),
                    "must be a whole number of pixels")  # fmt: skip
        fraction(self, "false_alarm_rate")
        require(self, "review_uncertain_poses", isinstance(self.review_uncertain_poses, bool), "must be True or False")
        non_negative(self, "min_field_psnr")
        require(self, "candidate_residual_ratio", isinstance(self.candidate_residual_ratio, (int, float))
                and self.candidate_residual_ratio >= 1, "must be a number of 1 or more")  # fmt: skip
        require(self, "candidate_separation_deg", isinstance(self.candidate_separation_deg, (int, float))
                and self.candidate_separation_deg >= 0, "must be a number of degrees, 0 or more")  # fmt: skip
        one_of(self, "register_reference", (*MOTIONS, None))
        require(self, "dataset", isinstance(self.dataset, str) and bool(self.dataset), "must name the dataset")
        require(self, "ckpt_root", isinstance(self.ckpt_root, str) and bool(self.ckpt_root), "must be a folder")
        require(self, "device", self.device is None or isinstance(self.device, str), "must be None or a device name")


@dataclass
class Prediction:
    """The result for one query.

    anomaly_map: (H, W) float32 in normal standard deviations above normal (0 where nothing is);
    c2w: the pose search's estimate of the query's pose; reference: (H, W, 3) render at
    reference_c2w, which is c2w unless a runner-up of the search explained the query better
    (``Detector.best_reference``; ``notes`` say so).
    anomalous: the decision at ``threshold`` (None when the comparison has no calibration, as in
    PAD's mode); a query whose pose is not confident is decided anomalous (``notes`` say so) unless
    ``review_uncertain_poses`` is off.
    """

    anomaly_map: np.ndarray
    score: float
    c2w: np.ndarray
    reference: np.ndarray
    reference_c2w: np.ndarray
    pose_residual: float
    pose_confident: bool
    seconds: float
    notes: list[str] = field(default_factory=list)
    threshold: float | None = None
    anomalous: bool | None = None
    failed = False

    def summary(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "anomalous": self.anomalous,
            "threshold": self.threshold,
            "c2w": self.c2w.tolist(),
            "reference_c2w": self.reference_c2w.tolist(),
            "pose_residual": self.pose_residual,
            "pose_confident": self.pose_confident,
            "seconds": self.seconds,
            "notes": self.notes,
        }


class Detector:
    """Pose-agnostic anomaly detector for one object.

    >>> detector = Detector().fit("data/MAD-Sim", "01Gorilla")
    >>> predictions = detector.predict(["query.png"])
    >>> predictions[0].score, predictions[0].anomaly_map.shape
    """

    def __init__(self, config: DetectorConfig | None = None):
        self.config = config or DetectorConfig()
        self.device = pick_device(self.config.device)
        self.model = None
        self.info: CheckpointInfo | None = None
        self.pose_estimator: PoseEstimator | None = None
        self.normal_views: NormalViews | None = None  # training views with the field's depth
        self.comparator = Comparator(self.config.compare, device=self.device)
        self.ckpt_dir: Path | None = None

    # ------------------------------------------------------------------ fit
    def fit(self, data: str | Path | MADClass, class_name: str | None = None, progress: bool = True) -> "Detector":
        """Train or load the field of a class, then prepare pose estimation and calibration.

        data: a MAD-format root (with ``class_name``), a class folder, or an opened MADClass.
        A checkpoint already under ``<ckpt_root>/<dataset>/<class>/`` is reused as it is when its
        training finished, and resumed when it was interrupted.
        """
        mad = open_class(data, class_name)
        check_source_width(mad, self.config.image_size)
        views = mad.load_train_views(size=self.config.image_size, progress=progress, backdrop=self.config.replace_backdrop)
        return self.fit_views(views, mad.name, progress)

    def fit_views(self, views: PosedImages, class_name: str, progress: bool = True) -> "Detector":
        """``fit`` on posed normal views in memory (``load_transforms``); checkpoint in ``<ckpt_root>/<dataset>/<class_name>/``."""
        if views.width != self.config.image_size:
            raise ConfigError(f"the views are {views.width} pixels wide but image_size is {self.config.image_size}: load them "
                              f"at that size (load_transforms(..., size={self.config.image_size})) or set image_size.")
        self.ckpt_dir = Path(self.config.ckpt_root) / self.config.dataset / class_name
        model_path = self.ckpt_dir / "model.pt"
        # A field whose training ran to its end is used as it is, whatever budget this config
        # names; an interrupted one resumes (`omnipose train` trains a finished one further).
        self.model, self.info = load_checkpoint(model_path, device=self.device) if model_path.is_file() else (None, None)
        check_backdrop(self.info, views, self.ckpt_dir)  # before an interrupted field resumes on them
        views, held_out = split_held_out(views, self.info, self.config.held_out_views)
        if self.info is None or "train_seconds" not in self.info.metrics:  # none yet, or interrupted
            train_config = replace(self.config.train, dataset=self.config.dataset, class_name=class_name, device=self.config.device)
            train_model(views, train_config, self.ckpt_dir, resume=True, progress=progress)
            self.model, self.info = load_checkpoint(model_path, device=self.device)
        elif progress:
            print(f"using the trained field in {self.ckpt_dir}")
        check_size(self)
        self.model.eval()
        views = learnt_views(views, self.info)
        if self.info.config.get("refine_poses") and tuple(self.info.train_c2w.shape) == tuple(views.c2w.shape):
            # The poses (and focal length) the field refined while it learnt.
            views = replace(views, c2w=self.info.train_c2w.clone(), K=self.info.K.clone())
        check_field_quality(self, views)
        self.pose_estimator = self._pose_estimator(views)
        self.normal_views = self._normal_views(views, progress)
        self._calibrate(views, progress)
        score_held_out(self, held_out, progress)
        return self

    @classmethod
    def load(cls, ckpt_dir: str | Path, config: DetectorConfig | None = None) -> "Detector":
        """A fitted detector from a checkpoint folder (model.pt and calibration.json)."""
        detector = cls(config)
        ckpt_dir = Path(ckpt_dir)
        detector.ckpt_dir = ckpt_dir
        detector.model, detector.info = load_checkpoint(ckpt_dir / "model.pt", device=detector.device)
        if config is None:  # the checkpoint says what size it works at
            detector.config = replace(detector.config, image_size=detector.info.width)
        check_size(detector)
        detector.model.eval()
        detector.pose_estimator = detector._pose_estimator()
        detector.normal_views = detector._normal_views()
        if detector.config.compare.mode != "pad":
            calibration = Calibration.load(ckpt_dir / "calibration.json")
            if calibration.field_key and calibration.field_key != model_fingerprint(detector.model):
                raise CheckpointError(
                    f"{ckpt_dir / 'calibration.json'} was fitted on another field than the one in {ckpt_dir / 'model.pt'} "
                    "(trained further since?): fit the detector again (Detector.fit, or omnipose detect) to refit it."
                )
            detector.comparator.calibration = calibration
        return detector

    def _pose_estimator(self, views: PosedImages | None = None) -> PoseEstimator:
        """Pose estimator at ``pose_size`` whose training-view features are cached beside the checkpoint."""
        info, views, cache = at_width(self.info, views, feature_cache_path(self.ckpt_dir, self.config.pose.matcher), self.pose_width)
        return PoseEstimator(self.model, info, self.config.pose, views=views, cache_path=cache)

    @property
    def pose_width(self) -> int:
        """The width poses are searched at: ``pose_size``, at most the field's working width."""
        return min(self.info.width, self.config.pose_size or self.info.width)

    def estimate_pose(self, query: np.ndarray) -> PoseResult:
        """The pose of query (H, W, 3), searched at ``pose_width`` (the aspect ratio kept)."""
        return self.pose_estimator.estimate(resize_to_width(query, self.pose_width))

    @torch.no_grad()
    def _normal_views(self, views: PosedImages | None = None, progress: bool = True) -> NormalViews | None:
        """The training views with the field's depth at each, cached beside the checkpoint for the
        field they were rendered with (``cached_normal_views``). None when the comparison uses no
        neighbours; needs ``views`` unless the cache is there."""
        if self.config.compare.neighbour_views == 0 or self.config.compare.mode == "pad":
            return None
        path, key = self.ckpt_dir / "normal_views.pt", model_fingerprint(self.model)
        return cached_normal_views(path, key, views, self._render_image, progress)

    def _calibrate(self, views: PosedImages, progress: bool) -> None:
        """Fit the comparison's normal statistics on training views rendered at their own poses (kept
        beside the checkpoint for the field it was fitted with)."""
        if self.config.compare.mode == "pad":
            return
        path, key = self.ckpt_dir / "calibration.json", model_fingerprint(self.model)
        calibration = stored_calibration(path, self.config.compare, key)
        if calibration is None:
            images, renders, alphas, neighbours = self.normal_pairs(views, progress)
            calibration = self.comparator.fit(images, renders, alphas, neighbours, progress=progress)
            calibration.field_key = key
            calibration.save(path)
        self.comparator.calibration = calibration

    def decision_threshold(self) -> float | None:
        """The image score above which a query is decided anomalous (``false_alarm_rate`` of the
        calibration's normal views lie above it); None without a calibration (PAD's mode)."""
        calibration = self.comparator.calibration
        return None if calibration is None else float(calibration.score_threshold(self.config.false_alarm_rate))

    @torch.no_grad()
    def normal_pairs(
        self, views: PosedImages, progress: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Normal (view, reference) pairs for calibration: ``calibration_views`` training views spread
        evenly, each with the field rendered at its own pose and the other training views nearest to
        it re-projected there (as a query gets them).

        Returns images (N, H, W, 3), renders (N, H, W, 3), render opacities (N, H, W) and
        neighbours (N, R, H, W, 3) (None when the comparison uses none).
        """
        count = min(self.config.calibration_views, len(views))
        indices = np.linspace(0, len(views) - 1, count).round().astype(int)
        references = []
        for index in tqdm(indices, desc="rendering normal views for calibration", disable=not progress, leave=False):
            references.append(self.reference_at(views.c2w[index], exclude=int(index)))  # views are normal_views' order
        images = [QueryView(views.images[index].numpy(), self.info.background).in_frame(reference)
                  for index, reference in zip(indices, references)]  # fmt: skip
        return pair_batches(images, references, self.normal_views is not None)

    # ------------------------------------------------------------------ predict
    def _require_fitted(self) -> None:
        if self.model is None or self.pose_estimator is None:
            raise OmniposeError(
                "the detector is not fitted: call Detector.fit(data, class_name) or Detector.load(ckpt_dir) first."
            )

    def predict_one(self, image: str | Path | np.ndarray) -> Prediction:
        """Pose, reference and anomaly map of one query (a path or an (H, W, 3|4) array in [0, 1])."""
        self._require_fitted()
        start = time.perf_counter()
        query, notes = prepare_query(image, self.info, self.config.pose.foreground_threshold, self.config.query_focal)
        pose = self.estimate_pose(query)
        result, reference = self.compare_at_pose(query_view(image, query, self.info, self.config), pose)
        c2w = torch.as_tensor(pose.c2w).float().cpu()
        if not torch.equal(reference.c2w, c2w):
            notes.append("compared at a runner-up of the pose search (reference_c2w), whose reference explains the "
                         "query better; c2w, pose_residual and pose_confident describe the search's best pose")
        score, threshold = float(result.score[0]), self.decision_threshold()
        anomalous = decide(score, threshold, not pose.low_confidence, self.config.review_uncertain_poses)
        if pose.low_confidence and self.config.review_uncertain_poses:
            notes.append("decided anomalous for review: the pose cannot be trusted (another object, a part the field "
                         "cannot explain, or an unusable photo), so the score does not say the object is normal")
        anomaly_map, reference_image = in_query_frame(result.anomaly_map[0].cpu().numpy().astype(np.float32),
                                                      reference.image.numpy(), image, self, notes, reference.crop)
        return Prediction(anomaly_map=anomaly_map, score=score, c2w=c2w.numpy(), reference=reference_image,
                          reference_c2w=reference.c2w.numpy(), pose_residual=float(pose.residual),
                          pose_confident=not pose.low_confidence, seconds=time.perf_counter() - start,
                          notes=notes + list(pose.notes), threshold=threshold, anomalous=anomalous)  # fmt: skip

    def render(self, c2w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The field at c2w (4, 4): reference (H, W, 3) and opacity (1, H, W) on the CPU."""
        out = self._render_image(c2w)
        return out["rgb"], out["opacity"][None]

    @torch.no_grad()
    def _render_image(self, c2w: torch.Tensor, K: torch.Tensor | None = None, size: tuple[int, int] | None = None
                      ) -> dict[str, torch.Tensor]:  # fmt: skip
        """The field at c2w through camera K (the field's own by default) at size (width, height)."""
        c2w = torch.as_tensor(c2w, dtype=torch.float32, device=self.device)
        K = self.info.K if K is None else K
        width, height = (self.info.width, self.info.height) if size is None else size
        out = self.model.render_image(c2w, K.to(self.device), height, width)
        return {name: value.cpu() for name, value in out.items()}

    def reference_at(self, c2w: torch.Tensor, exclude: int | None = None) -> Reference:
        """The render at c2w (4, 4), the ``neighbour_views`` nearest training views re-projected there and, with
        ``compare.skip_unseen``, what none saw (``make_reference``; ``exclude``: a training view's own pose)."""
        cfg = self.config.compare
        return make_reference(self._render_image, self.normal_views, c2w, cfg.neighbour_views, cfg.reprojection_tolerance,
                              exclude, find_unseen=cfg.skip_unseen and exclude is None, crop_margin=cfg.object_crop,
                              frame=(self.info.K, self.info.width, self.info.height))  # fmt: skip

    def pose_candidates(self, pose: PoseResult) -> list[torch.Tensor]:
        """The poses worth comparing at (``candidate_poses``), each (4, 4) on the CPU: one alone where it was chosen
        by chromaticity or aligned on structure, for queries lit otherwise, whose colours rank the runners-up."""
        pose_config = self.config.pose
        lit_otherwise = pose_config.rank_by_chromaticity or pose_config.structure_align
        return candidate_poses(pose, 1 if lit_otherwise else self.config.pose_candidates,
                               self.config.candidate_residual_ratio, self.config.candidate_separation_deg)

    def reference_candidates(self, query: np.ndarray | QueryView, pose: PoseResult) -> list[Reference]:
        """The normal references worth comparing query (H, W, 3) with: ``reference_at`` each of
        ``pose_candidates(pose)``, as rendered and registered onto the query (``register_reference``;
        its neighbours get the same 2-D warp).

        The render as it is stays a candidate because resampling blurs it: a sub-pixel warp can
        cost more fine texture than it gains in alignment. The estimate's reference comes first.
        """
        candidates = []
        for c2w in self.pose_candidates(pose):
            reference = self.reference_at(c2w)
            candidates.append(reference)
            if self.config.register_reference is not None:
                warped = registered_reference(query, reference, self.config.register_reference, self.info.background)
                if warped is not None:
                    candidates.append(warped)
        return candidates

    def compare_at_pose(self, query: np.ndarray | QueryView, pose: PoseResult) -> tuple[ComparisonResult, Reference]:
        """Compare query (H, W, 3) with every one of ``reference_candidates(query, pose)`` and keep the
        one that explains it best (see ``best_reference``)."""
        return self.best_reference(query, self.reference_candidates(query, pose))

    def best_reference(self, query: np.ndarray | QueryView, candidates: Sequence[Reference]
                       ) -> tuple[ComparisonResult, Reference]:  # fmt: skip
        """Of the candidates, the one that explains query (H, W, 3) best (``references.best_reference``)."""
        return best_reference(self.comparator, query, candidates)

    def predict(self, images: Sequence[str | Path | np.ndarray], progress: bool = True) -> list["Prediction | QueryFailure"]:
        """A Prediction for every query, with the model loaded once; a query that cannot be done gets
        a QueryFailure (``.failed`` is True, ``.error`` says why) and the others go on."""
        return predict_many(self, images, progress)

    def detect_class(self, mad: MADClass, out_dir: str | Path, progress: bool = True) -> Path:
        """Run on every test image of a class and write the prediction folder (resumable; ``batch.py``)."""
        return detect_class(self, mad, out_dir, progress)


def open_class(data: str | Path | MADClass, class_name: str | None) -> MADClass:
    """A MADClass as given, or from a class folder, or from a root and ``class_name``."""
    if isinstance(data, MADClass):
        return data
    path = Path(data)
    return open_mad_class(path.parent, path.name) if class_name is None else open_mad_class(path, class_name)


def in_query_frame(anomaly_map: np.ndarray, reference: np.ndarray, image, detector: "Detector", notes: list[str],
                   crop: np.ndarray | None = None):  # fmt: skip
    """The map (H, W) and the reference (H, W, 3) moved from the frame they were compared in back to the
    query's own, at the working size: from the prepared query's frame, where the query was scaled to the
    model's focal length (``query_zoom``), and from a crop about the object (``crop``, (2, 3) from the
    prepared frame to the crop's): so that they lie over the query and its ground-truth mask. Parts
    the comparison did not see get the map's lowest value and the background."""
    info = detector.info
    zoom = query_zoom(image, info, detector.config.query_focal)
    to_compared = None if zoom is None else zoom_affine(zoom, info.width, info.height)
    if crop is not None:
        to_compared = crop if to_compared is None else compose_affine(crop, to_compared)
    if to_compared is None:
        return anomaly_map, reference
    back, size = invert_affine(to_compared), (info.width, info.height)
    notes.append("the map and the reference are moved back to the query's own frame")
    return (warp_image(anomaly_map, back, float(anomaly_map.min()), size),
            warp_image(reference, back, info.background, size))  # fmt: skip


def decide(score: float, threshold: float | None, pose_confident: bool, review_uncertain_poses: bool = True) -> bool | None:
    """Whether a query is anomalous: its score is above the normal-data threshold, or (with
    ``review_uncertain_poses``) its pose cannot be trusted, so that nothing the detector cannot vouch
    for passes as normal. None without a threshold."""
    if threshold is None:
        return None
    return bool(score > threshold or (review_uncertain_poses and not pose_confident))


def split_held_out(views: PosedImages, info: CheckpointInfo | None, count: int) -> tuple[PosedImages, PosedImages | None]:
    """(the views the field learns from, the views kept out of its training: ``DetectorConfig.held_out_views``).
    A field already trained, in full or in part, keeps the split it was trained with (the views missing
    from its ``train_image_paths``; none for a field trained on all of them). Views its training left out as
    unexplained stay with the views it learns from, so that an interrupted training resumes on the same views
    (``learnt_views`` drops them once it is trained)."""
    if info is not None:
        trained = set(info.train_image_paths) | set(info.left_out_paths)
        held_out = [i for i, path in enumerate(views.paths) if str(path) not in trained]
    elif count and len(views) >= 4 * count:
        held_out = ((np.arange(count) + 0.5) * len(views) / count).astype(int).tolist()  # between calibration's views
    else:
        held_out = []
    if not held_out or len(held_out) == len(views):
        return views, None
    kept = sorted(set(range(len(views))) - set(held_out))
    return views.subset(kept), views.subset(held_out)


def learnt_views(views: PosedImages, info: CheckpointInfo) -> PosedImages:
    """The views the field learnt from (its ``train_image_paths``): without the views kept out of its training
    (``split_held_out``) and those its training left out as unexplained (``CheckpointInfo.left_out_paths``: their
    poses or content disagree with the rest, so they serve neither as references nor for calibration)."""
    trained = set(info.train_image_paths)
    if not trained:  # a checkpoint that lists none (nerf-pytorch's)
        return views
    kept = [i for i, path in enumerate(views.paths) if str(path) in trained]
    return views if len(kept) == len(views) else views.subset(kept)


def score_held_out(detector: "Detector", held_out: PosedImages | None, progress: bool = True) -> None:
    """Run the views the field did not learn from as queries and keep their scores in the calibration
    (beside the checkpoint), once per calibration."""
    calibration = detector.comparator.calibration
    if held_out is None or calibration is None or calibration.held_out_scores:
        return
    images = tqdm(held_out.images, desc="normal views the field did not learn, as queries", disable=not progress, leave=False)
    calibration.held_out_scores = [detector.predict_one(image.numpy()).score for image in images]
    calibration.save(detector.ckpt_dir / "calibration.json")


def at_width(info: CheckpointInfo, views: PosedImages | None, cache: Path, width: int):
    """The field's cameras (``info``), its training views and the file of their pose index, as seen
    through cameras ``width`` pixels wide (intrinsics scaled, views resized, the index cached beside,
    not over, the one at the field's own width). Returns (info, views, cache)."""
    if width == info.width:
        return info, views, cache
    height = max(1, round(info.height * width / info.width))
    K = None if info.K is None else scale_intrinsics(info.K, width / info.width, height / info.height)
    views = None if views is None else views.resized(width)
    return replace(info, width=width, height=height, K=K), views, cache.with_name(f"{cache.stem}.{width}px.pt")


def check_source_width(mad: MADClass, image_size: int) -> None:
    """ConfigError when the class's training images are narrower than the working width."""
    native = image_width(mad.train_images[0]) if mad.train_images else image_size
    if native < image_size:
        raise ConfigError(f"the training images of {mad.name} are {native} pixels wide but image_size is {image_size}: "
                          f"upsampling adds no detail, only time. Use --size {native} (image_size={native}), or images "
                          f"of at least {image_size} pixels.")


def check_backdrop(info: CheckpointInfo | None, views: PosedImages, ckpt_dir: Path) -> None:
    """ConfigError when a field was trained on views read with the other backdrop setting
    (``DetectorConfig.replace_backdrop``): calibration and queries would not match what it learnt."""
    if info is None or info.backdrop == views.backdrop:
        return
    kept = {True: "replaced", False: "kept"}
    raise ConfigError(f"the field in {ckpt_dir} was trained on views whose plain backdrop was {kept[info.backdrop]}, "
                      f"these views have theirs {kept[views.backdrop]}: set replace_backdrop={info.backdrop}, or train "
                      "another field (another ckpt_root or dataset).")


def check_size(detector: "Detector") -> None:
    """ConfigError when the detector's checkpoint was trained at another size than its config asks
    for: its renders would be compared with queries at the config's size (or the size ignored)."""
    info, config = detector.info, detector.config
    if info.width and info.width != config.image_size:
        raise ConfigError(
            f"the field in {detector.ckpt_dir} was trained at {info.width}x{info.height} pixels but the image size asked "
            f"for is {config.image_size} (--size): use --size {info.width}, or train a field at "
            f"{config.image_size} in another --ckpt-root."
        )


def check_field_quality(detector: "Detector", views: PosedImages, count: int = 4) -> float:
    """The PSNR (dB) at which the detector's field renders ``count`` of its training views (spread
    evenly); CheckpointError below ``min_field_psnr``. Checked before the costly part of a fit."""
    indices = np.linspace(0, len(views) - 1, min(count, len(views))).round().astype(int)
    errors = [((detector._render_image(views.c2w[i])["rgb"] - views.images[i]) ** 2).mean() for i in indices]
    psnr = float(-10.0 * torch.log10(torch.stack(errors).mean().clamp_min(1e-10)))
    config = detector.config
    if psnr < config.min_field_psnr:
        steps = detector.info.metrics.get("steps", detector.info.step)
        raise CheckpointError(
            f"the field in {detector.ckpt_dir} renders its own training views at {psnr:.1f} dB PSNR (after {steps} "
            f"training steps); below {config.min_field_psnr:g} dB it is not trained enough to tell defects "
            f"from its own errors. Train it further (`omnipose train` on the same views with --out {detector.ckpt_dir} "
            "and more --steps resumes it), or delete that folder to train anew."
        )
    return psnr
