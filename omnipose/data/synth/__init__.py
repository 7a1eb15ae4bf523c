"""The built-in MAD-format benchmark (``omnipose synth``): LEGO-like figures ray-cast exactly, with planted defects.

MAD and M2AD cannot be downloaded everywhere, yet every command must run out of the box; so this
package builds procedural LEGO-like figures (bricks with studs, slopes, round bricks, rods) and
writes them in exactly the MAD-Sim layout. Everything is a deterministic function of
(class name, seed, config). Modules, in the order a class is made:

- ``raycast``: exact ray casting and shading of boxes and cylinders;
- ``config``: ``SynthConfig``, the class names and test types;
- ``figures``: the figure language (``FigureBuilder``); ``designs``: the twelve figures;
- ``views``: the cameras and the render of one view; ``defects``: planted defects and test views;
- ``writer``: a class on disk (``generate_class``, ``ensure_class``) and reading it back;
- ``preview``: contact sheets;
- the photo style (``--style photo``, a stand-in for MAD-Real; Mitsuba 3, the ``photo`` extra):
  ``photo_config`` (``PhotoConfig``, ``PhotoLighting``), ``photo_meshes`` (solids as triangles),
  ``photo_scene`` (table, clutter, room, lights), ``photo`` (cameras, sensor, exact masks, ``PhotoStyle``).
"""
from omnipose.data.synth.config import SCENE_BOUNDS, STYLES, SYNTH_CLASSES, TEST_TYPES, SynthConfig, SynthError
from omnipose.data.synth.defects import RenderedTestView, make_test_view
from omnipose.data.synth.designs import build_figure
from omnipose.data.synth.figures import Figure, FigureBuilder
from omnipose.data.synth.photo import PhotoStyle, develop, photo_test_pose, photo_training_poses, reconstruction_error
from omnipose.data.synth.photo_config import PhotoConfig, PhotoLighting
from omnipose.data.synth.preview import write_preview
from omnipose.data.synth.raycast import (
    Lighting,
    combine,
    make_box,
    make_cylinder,
    render,
)
from omnipose.data.synth.views import (
    MASK_MIN_REGION,
    MASK_TOLERANCE,
    anomaly_mask,
    camera_distance,
    class_intrinsics,
    random_test_pose,
    render_defect_free,
    render_scene,
    training_poses,
    without_specks,
)
from omnipose.data.synth.writer import (
    GROUND_TRUTH_POSES,
    ensure_class,
    generate_class,
    generate_dataset,
    load_ground_truth_poses,
    load_true_poses,
    read_synth_config,
)

__all__ = [
    "Figure",
    "FigureBuilder",
    "GROUND_TRUTH_POSES",
    "Lighting",
    "MASK_MIN_REGION",
    "MASK_TOLERANCE",
    "PhotoConfig",
    "PhotoLighting",
    "PhotoStyle",
    "RenderedTestView",
    "SCENE_BOUNDS",
    "STYLES",
    "SYNTH_CLASSES",
    "SynthConfig",
    "SynthError",
    "TEST_TYPES",
    "anomaly_mask",
    "build_figure",
    "camera_distance",
    "class_intrinsics",
    "combine",
    "develop",
    "ensure_class",
    "generate_class",
    "generate_dataset",
    "load_ground_truth_poses",
    "load_true_poses",
    "make_box",
    "make_cylinder",
    "make_test_view",
    "photo_test_pose",
    "photo_training_poses",
    "random_test_pose",
    "read_synth_config",
    "reconstruction_error",
    "render",
    "render_defect_free",
    "render_scene",
    "training_poses",
    "without_specks",
    "write_preview",
]
