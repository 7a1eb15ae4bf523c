"""Settings of pose estimation: the coarse stage (``PoseConfig``), direct alignment (``AlignConfig``)
and iNeRF refinement (``RefineConfig``). The defaults target 200x200 MAD-like queries on CPU."""
from __future__ import annotations

from dataclasses import dataclass, field

from omnipose.core.config import (
    Config,
    fraction,
    non_negative,
    one_of,
    optional_positive,
    positive,
    require,
)
from omnipose.pose.matching import MATCHER_NAMES

REFINE_LOSSES = ("cauchy", "huber", "l2")


@dataclass
class AlignConfig(Config):
    """Direct photometric alignment: render colour + depth once per round, then Gauss-Newton on the
    query's own image gradients (no gradient through the field, so a round costs one forward render).

    Hypotheses stop being rendered once they can no longer win, since renders are what a round
    costs (see ``merge_rotation_deg`` and ``prune_ratio``).
    """

    rays: int = 1536
    """Pixels rendered per hypothesis per round."""
    max_rounds: int = 5
    """Rounds of render + Gauss-Newton at most."""
    max_step_deg: float = 5.0
    """The first trust radius of a round's move, in degrees (rotation, and translation as a share of
    the camera distance in radians); halved whenever a move is undone."""
    gauss_newton_steps: int = 8
    """Iterations per round, each re-linearised at the current pose."""
    blur_sigmas: tuple[float, ...] = (3.0, 1.5, 0.0)
    """Gaussian blur (pixels) of the query per round, the last one repeating: wide first for a wide basin."""
    loss_scale: float = 0.2
    """Cauchy scale of the colour error (iteratively reweighted, so a defect's pixels weigh little)."""
    damping: float = 1e-3
    """Levenberg-Marquardt's first damping, relative to the diagonal of the normal equations."""
    min_opacity: float = 0.9
    """Rendered opacity a pixel needs for its depth to be lifted to a 3D point."""
    interest_fraction: float = 0.5
    """Share of the pixels drawn around the query's keypoints, the rest over the dilated object."""
    converge_rotation_deg: float = 0.02
    """A round that turns every pose less than this (at the sharpest level) ends the alignment..."""
    converge_translation: float = 3e-4
    """...if it also moves them less than this share of the camera distance."""
    merge_rotation_deg: float = 0.5
    """A hypothesis within this rotation of a better one (starts from different matches often meet)
    stops being aligned..."""
    merge_translation: float = 0.005
    """...if it is also within this share of the camera distance of it."""
    prune_ratio: float | None = 3.0
    """From round ``prune_after_round`` on, a hypothesis whose cost is above this many times the best's
    stops being aligned (None keeps them all)."""
    prune_after_round: int = 2
    """The first round at which ``prune_ratio`` applies."""
    seed: int = 0
    """Seed of the pixels drawn."""

    def check(self) -> None:
        positive(self, "rays", "max_step_deg", "loss_scale")
        non_negative(self, "max_rounds", "gauss_newton_steps", "damping", "converge_rotation_deg",
                     "converge_translation", "merge_rotation_deg", "merge_translation", "prune_after_round")
        fraction(self, "min_opacity", "interest_fraction")
        require(self, "blur_sigmas", len(self.blur_sigmas) > 0 and all(_finite(s) and s >= 0 for s in self.blur_sigmas),
                "must be one or more blur sigmas of 0 or more, e.g. (3.0, 1.5, 0.0)")
        require(self, "prune_ratio", self.prune_ratio is None or (_finite(self.prune_ratio) and self.prune_ratio >= 1),
                "must be None or a number of 1 or more (below 1 the best hypothesis would be pruned)")
        require(self, "seed", isinstance(self.seed, int), "must be an integer")


@dataclass
class RefineConfig(Config):
    """iNeRF refinement: an se(3) twist per hypothesis optimised with Adam through the renderer, over
    coarse-to-fine levels. Translations are relative to the camera distance."""

    box_sizes: tuple[int, ...] = (3, 1)
    """Coarse-to-fine levels: the side in pixels of the box the query is averaged over (odd; 1 = full
    resolution). A ray lands anywhere in its target pixel's box, so on average it sees the same box
    average."""
    rays: int = 512
    """Rays per hypothesis per step."""
    subsamples: int = 1
    """Rays per target pixel at the box levels: more lower the noise of the box average, at their cost."""
    interest_fraction: float = 0.6
    """Share of rays drawn around the query's keypoints, the rest uniformly over the dilated object."""
    loss: str = "cauchy"
    """Robust penalty of the colour error: 'cauchy', 'huber' or 'l2' (iNeRF's plain squared error)."""
    loss_scale: float = 0.1
    """Scale of the Cauchy / Huber penalty."""
    learning_rate: float = 0.004
    """Adam's learning rate at the first level."""
    lr_decay: float = 0.5
    """Factor the learning rate decays by every ``lr_decay_steps`` steps within a level."""
    lr_decay_steps: int = 15
    """Steps over which the learning rate decays by ``lr_decay``."""
    level_lr_factor: float = 0.5
    """Factor the learning rate changes by from one level to the next."""
    max_steps_per_level: int = 20
    """Steps per level at most."""
    min_steps_per_level: int = 6
    """Steps per level before convergence is tested."""
    patience: int = 6
    """Steps over which convergence is judged: a hypothesis is done with a level when, over the last
    ``patience`` steps, its pose moved less than the converge thresholds, or less than ``plateau``
    of what steady Adam steps at the current rate would have covered (it only oscillates)."""
    converge_rotation_deg: float = 0.02
    """Rotation (degrees) over ``patience`` steps below which a pose has converged..."""
    converge_translation: float = 3e-4
    """...with a move below this share of the camera distance."""
    plateau: float = 0.3
    """Share of the steady Adam path below which a hypothesis counts as only oscillating."""
    fixed_steps: int | None = None
    """Run exactly this many steps per level, without the convergence test (PAD's recipe); None tests."""
    keep: tuple[int, ...] = (1,)
    """Hypotheses kept after each level, best residual on the evaluation rays first (the last entry
    repeats; empty keeps them all)."""
    chunk: int = 16384
    """Rays per render call."""
    seed: int = 0
    """Seed of the rays drawn."""

    def check(self) -> None:
        require(self, "box_sizes", len(self.box_sizes) > 0 and all(_whole(b) and b >= 1 and b % 2 == 1 for b in self.box_sizes),
                "must be odd positive pixel sizes, e.g. (3, 1)")
        require(self, "rays", _finite(self.rays) and self.rays >= 16, "refinement needs at least 16 rays per step")
        one_of(self, "loss", REFINE_LOSSES)
        positive(self, "subsamples", "loss_scale", "learning_rate", "lr_decay_steps", "level_lr_factor",
                 "max_steps_per_level", "patience", "chunk")
        fraction(self, "lr_decay", open_low=True)
        fraction(self, "interest_fraction")
        non_negative(self, "min_steps_per_level", "converge_rotation_deg", "converge_translation", "plateau")
        optional_positive(self, "fixed_steps")
        require(self, "keep", all(_whole(k) and k >= 1 for k in self.keep), "must be counts of 1 or more, e.g. (1,)")
        require(self, "seed", isinstance(self.seed, int), "must be an integer")


@dataclass
class PoseConfig(Config):
    """Pose estimation settings: retrieval, coarse hypotheses, the two refinement stages, confidence."""

    matcher: str = "xfeat"
    """Keypoint matcher, one of ``omnipose.pose.MATCHER_NAMES``."""
    loftr_weights: str | None = None
    """LoFTR checkpoint, needed by the 'loftr' matcher."""
    max_keypoints: int = 1024
    """Keypoints per image at most."""
    rotations: int = 8
    """In-plane rotations a query is described at when the matcher is not rotation invariant (every
    360/rotations degrees)."""
    match_scale_from: float | None = 1.6
    """Where the object is this many times smaller in the query than in the retrieval views (its radius
    against their median), the query is magnified about the object to their scale (at most 4 times)
    before keypoints are described: photographs taken from afar or with a long lens show it a few dozen
    pixels across, where a matcher finds few keypoints the renders share. The views' own spread stays
    under it (the built-in classes' test views: up to 1.3 times). None: never."""
    shortlist: int = 4
    """(view, rotation) pairs matched finely."""
    hypotheses: int = 3
    """Coarse poses from keypoint matches aligned side by side."""
    appearance_hypotheses: int = 4
    """More coarse poses from global appearance retrieval (``omnipose.pose.appearance``), which
    rescues queries the matches miss."""
    appearance_on_demand: bool = True
    """Align the appearance hypotheses only where the best keypoint one, aligned, rests on fewer than
    ``min_inliers`` matches or fits the query clearly worse than the field fits its own training views
    (elsewhere they cost a third of the alignment and lose); False: align them beside the keypoint
    ones from the start."""
    appearance_step_deg: float = 10.0
    """Turn (degrees) between the query thumbnails compared in appearance retrieval."""
    gap_views: int = 24
    """Renders of the field added to the retrieval views, at up to this many directions farther than
    ``gap_angle_deg`` from every training view: MAD's training cameras stop short of the poles, and a
    query from below would otherwise only find views 20-40 degrees away, too far for alignment to
    bridge. 0 retrieves against the training views alone."""
    gap_angle_deg: float = 15.0
    """Angle from every training view beyond which a direction counts as a gap."""
    restart_deg: float | None = 8.0
    """Where the best aligned pose fits the query worse than the field fits its own training views,
    poses this many degrees around it (orbited in 4 directions across the view, and rolled both
    ways; ``PoseScene.nearby``) are aligned too, and those that fit clearly better compete with it:
    from a global-appearance hypothesis, alignment on a plain object can settle 5-10 degrees off, in
    a basin the true pose is a short step from. None: no restarts."""
    half_turn: float | None = 2.0
    """With the restarts (where the best aligned pose fits worse than the field fits its own training
    views), the best pose turned half-way about the object's vertical (``PoseScene.half_turned``) is
    aligned too where, as turned, it fits within this many times the best's residual: it becomes the
    estimate where it then fits clearly better, as a restart does, and is kept among the alternatives
    otherwise. None: off. A near-symmetric object seen along its vertical (06Car from below) looks
    almost alike from both sides (turned, 1.0 times the best's residual before any alignment), no
    keypoint match tells them apart, and where the search settled on the wrong side the true one was
    never tried; with a defect, the wrong side's reference can explain it away (a part missing on one
    side is background on the other). An object that looks otherwise from behind fits 3-13 times worse
    turned (two other views of 06Car, the lego's views), and is not aligned there."""
    restart_from: int = 2
    """Aligned hypotheses (lowest residual first) the first ring of restarts goes around: on a
    near-symmetric object the best can be the object's other side, and the runner-up a few degrees
    from the true pose."""
    restart_rounds: int = 2
    """Rings of restarts at most, each at half the angle of the one before and around the best pose
    alone, run while a restart beats the best pose."""
    refine_top: int = 1
    """How many aligned hypotheses (best residual first) go on to iNeRF refinement."""
    min_inliers: int = 15
    """Keypoint matches (PnP inliers) below which a pose counts as unsupported."""
    pnp_reprojection_px: float = 2.5
    """RANSAC PnP's inlier threshold in pixels."""
    min_opacity: float = 0.95
    """Rendered opacity a keypoint needs for the field's depth under it to give a 3D point."""
    max_residual_ratio: float = 2.5
    """A residual this many times the field's own residual on training views flags the result as
    low confidence."""
    unsupported_residual_ratio: float = 1.6
    """The same ratio for a pose supported by fewer than ``min_inliers`` keypoint matches: an image of
    another object matches few keypoints, and alignment can still drape the field over its outline."""
    max_chromaticity_ratio: float = 5.0
    """With ``rank_by_chromaticity``, a chromaticity residual this many times the field's own on
    training views flags the result as low confidence, with or without keypoint matches."""
    relit_residual_ratio: float = 5.0
    """With ``rank_by_chromaticity``, the colour residual ratio that flags the result (in place of
    ``max_residual_ratio``): light from another side raises a right pose's colour residual too."""
    foreground_threshold: float = 0.04
    """Colour difference from the background above which a pixel belongs to the object."""
    match_query_colour: bool = False
    """Search the pose on the query with its object brought to the training views' median colour (one
    gain per channel) when a gain is off by more than 30 %; the comparison still sees the query as it is. For queries from another camera
    or renderer than the training views (``omnipose sim2real`` turns it on for photographs against a
    field from renders); within one capture the object's colour changes more from view to view than
    the exposure does, so it is off by default."""
    rank_by_chromaticity: bool = False
    """Choose among the aligned poses by the residual of chromaticity (colour over brightness) instead
    of colour, then let the chosen pose duel with itself turned half-way about the object's vertical
    (aligned in its turn), judged where the two renders disagree; only the winner is refined. For
    queries lit otherwise than the training views (another capture session): shading from another
    direction can make the far side of a near-symmetric object fit the colours better than its true
    side, while the object's colours stay where they are. The detector then compares at the chosen
    pose alone, and the confidence is judged on the chromaticity residual there
    (``max_chromaticity_ratio``)."""
    side_by_structure: bool = False
    """Where the restarts align the best pose's half turn (``half_turn``), choose between the two by the
    band-passed grey structure where their renders differ (``scoring.structure_fits``) instead of by
    colour residual. For queries lit otherwise than the training views (``omnipose sim2real`` turns it
    on for photographs against a field from renders): the shading of a near-symmetric object's far
    side can fit the colours better than its true side, while its edges and marks stay where they are."""
    structure_align: bool = False
    """After refinement, align the chosen pose once more by the band-passed grey of the object (its edges,
    studs and printed marks) on a crop about it (``align.structure_aligned``), and keep it where that
    structure then correlates better with the query's; with ``half_turn`` on, its half turn aligned so
    too is taken where it correlates better still. For queries lit otherwise than the training views
    (``omnipose sim2real`` turns it on for photographs against a field from renders): there the colour
    cost holds a pose 3 - 15 degrees off where it lands, while the edges and marks still pull it in.
    The pose's residual is measured again at the new pose, and the detector compares there alone."""
    interest_radius: int = 4
    """Keypoint dilation (pixels) of PAD's interest regions."""
    eval_rays: int = 2048
    """Fixed rays over the dilated object on which hypotheses are compared (``PoseScoring``)."""
    eval_trim: float = 0.03
    """Share of the worst evaluation rays left out of the residual (see ``PoseScoring`` for why small)."""
    chunk: int = 16384
    """Rays per render call."""
    align: AlignConfig | None = field(default_factory=AlignConfig)
    """Direct alignment of the hypotheses; None skips it."""
    refine: RefineConfig | None = field(default_factory=RefineConfig)
    """iNeRF refinement of the best; None skips it."""
    device: str | None = None
    """cpu, cuda, cuda:1; None: the model's device."""
    cache_dir: str | None = "retrieval/cache"
    """Where training features are cached when no checkpoint folder is known (None: no disk cache)."""
    single_thread: bool = True
    """Run on one torch thread: the batches here are small, and on a shared CPU torch's thread pool
    costs far more than it gains (rendering runs several times slower on 2 threads than on 1 when
    the cores are busy)."""
    progress: bool = False
    """Show progress bars."""

    def check(self) -> None:
        require(self, "matcher", isinstance(self.matcher, str) and self.matcher.lower() in MATCHER_NAMES,
                f"must be one of {', '.join(MATCHER_NAMES)}")
        positive(self, "max_keypoints", "rotations", "shortlist", "hypotheses", "appearance_step_deg", "restart_from",
                 "restart_rounds", "pnp_reprojection_px", "unsupported_residual_ratio", "eval_rays", "chunk",
                 "min_inliers")
        require(self, "match_scale_from", self.match_scale_from is None or (_finite(self.match_scale_from)
                                                                             and self.match_scale_from >= 1),
                "must be None (off) or a ratio of sizes of 1 or more, e.g. 1.6")
        require(self, "half_turn", self.half_turn is None or (_finite(self.half_turn) and self.half_turn >= 1),
                "must be None (off) or a residual ratio of 1 or more, e.g. 2")
        restart = self.restart_deg
        require(self, "restart_deg", restart is None or (_finite(restart) and 0 < restart < 90),
                "must be None or a number of degrees between 0 and 90, e.g. 8")
        non_negative(self, "appearance_hypotheses", "gap_views", "gap_angle_deg", "refine_top", "interest_radius")
        fraction(self, "min_opacity", "foreground_threshold", "eval_trim")
        for name in ("match_query_colour", "rank_by_chromaticity", "side_by_structure", "structure_align",
                     "appearance_on_demand"):
            require(self, name, isinstance(getattr(self, name), bool), "must be True or False")
        for name in ("max_residual_ratio", "max_chromaticity_ratio", "relit_residual_ratio"):
            require(self, name, _finite(getattr(self, name)) and getattr(self, name) > 1,
                    "must be a number above 1 (the field's own residual on training views is 1)")
        for name, kind in (("align", AlignConfig), ("refine", RefineConfig)):
            require(self, name, getattr(self, name) is None or isinstance(getattr(self, name), kind),
                    f"must be an {kind.__name__} or None")

    @property
    def appearance_deferred(self) -> bool:
        """Whether the appearance hypotheses wait until the keypoint ones are aligned and judged
        (``appearance_on_demand``; without alignment there is nothing to judge them by)."""
        return self.appearance_on_demand and self.align is not None


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) < float("inf")


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
