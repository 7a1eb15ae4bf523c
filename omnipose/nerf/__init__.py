"""The radiance field of the normal object: encodings, fields, volume rendering, training, checkpoints.

Modules, in the order a point becomes a pixel and a model a file:
``encoding`` (frequencies, spherical harmonics), ``interpolation`` (table-row blending),
``hash_grid`` and ``triplane`` (learned grid encodings), ``field`` (NGP field), ``nerf_mlp``
(nerf-pytorch's network), ``bounds`` (scene box), ``sampling`` (random draws, pdf sampling),
``occupancy`` (empty-space skipping), ``compositing`` (volume rendering), ``models`` (field +
rendering), ``quality`` (PSNR / SSIM), ``checkpoint`` (files), ``train`` (the training loop), ``consistency``
(whether posed views hold together, by a short field).
"""
from omnipose.nerf.bounds import (
    DEFAULT_AABB,
    estimate_aabb,
    ray_aabb_intersect,
    resolve_aabb,
)
from omnipose.nerf.checkpoint import (
    CheckpointInfo,
    load_checkpoint,
    save_checkpoint,
)
from omnipose.nerf.compositing import composite, composite_samples, distortion, nerf_raw_to_outputs
from omnipose.nerf.consistency import FieldCheck, FieldCheckConfig
from omnipose.nerf.encoding import PositionalEncoding, SphericalHarmonicsEncoding
from omnipose.nerf.field import NGPField, NGPFieldConfig, truncated_exp
from omnipose.nerf.hash_grid import (
    HashGridConfig,
    HashGridEncoding,
    TcnnHashGridEncoding,
    grid_levels,
    make_grid_encoding,
    resample_grid,
    tcnn_available,
)
from omnipose.nerf.interpolation import interpolate_rows
from omnipose.nerf.models import RadianceModel, RenderConfig, VanillaNeRFModel
from omnipose.nerf.nerf_mlp import NeRFMLP, NeRFMLPConfig, load_nerf_mlp
from omnipose.nerf.occupancy import OccupancyGrid
from omnipose.nerf.quality import evaluate_views, psnr, ssim
from omnipose.nerf.sampling import random_uniform, sample_pdf
from omnipose.nerf.train import (
    TrainConfig,
    default_field_config,
    split_holdout,
    train_model,
)
from omnipose.nerf.triplane import TriPlaneConfig, TriPlaneEncoding

__all__ = [
    "CheckpointInfo",
    "DEFAULT_AABB",
    "FieldCheck",
    "FieldCheckConfig",
    "HashGridConfig",
    "HashGridEncoding",
    "NGPField",
    "NGPFieldConfig",
    "NeRFMLP",
    "NeRFMLPConfig",
    "OccupancyGrid",
    "PositionalEncoding",
    "RadianceModel",
    "RenderConfig",
    "SphericalHarmonicsEncoding",
    "TcnnHashGridEncoding",
    "TrainConfig",
    "TriPlaneConfig",
    "TriPlaneEncoding",
    "VanillaNeRFModel",
    "composite",
    "composite_samples",
    "distortion",
    "default_field_config",
    "estimate_aabb",
    "evaluate_views",
    "grid_levels",
    "interpolate_rows",
    "load_checkpoint",
    "load_nerf_mlp",
    "make_grid_encoding",
    "nerf_raw_to_outputs",
    "psnr",
    "random_uniform",
    "ray_aabb_intersect",
    "resample_grid",
    "resolve_aabb",
    "sample_pdf",
    "save_checkpoint",
    "split_holdout",
    "ssim",
    "tcnn_available",
    "train_model",
    "truncated_exp",
]
