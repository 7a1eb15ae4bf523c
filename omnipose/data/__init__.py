"""Datasets in: Blender/NeRF ``transforms.json``, the MAD-Sim / MAD-Real and M2AD layouts, downloads."""
from omnipose._legacy import legacy_getattr
from omnipose.data.blender import (
    IMAGE_SUFFIXES,
    PosedImages,
    load_transforms,
    natural_key,
)
from omnipose.data.download import (
    SOURCES,
    ArchiveError,
    DatasetSource,
    DownloadError,
    ExtractionReport,
    check_archive,
    download_dataset,
    extract_archive,
    manual_route,
)
from omnipose.data.m2ad import (
    M2adClass,
    M2adImage,
    M2adLayoutWarning,
    group_object_instances,
    group_view_instances,
    list_m2ad_classes,
    mask_path_for,
    open_m2ad_class,
    parse_view_illumination,
    split_normal_specimens,
)
from omnipose.data.mad import (
    DEFECT_TYPES,
    GOOD,
    MAD_CLASSES,
    MADClass,
    QueryItem,
    list_classes,
    open_mad_class,
)

__getattr__ = legacy_getattr("omnipose.data")

__all__ = [
    "ArchiveError",
    "DEFECT_TYPES",
    "DatasetSource",
    "DownloadError",
    "ExtractionReport",
    "GOOD",
    "IMAGE_SUFFIXES",
    "M2adClass",
    "M2adImage",
    "M2adLayoutWarning",
    "MADClass",
    "MAD_CLASSES",
    "PosedImages",
    "QueryItem",
    "SOURCES",
    "check_archive",
    "extract_archive",
    "group_object_instances",
    "group_view_instances",
    "download_dataset",
    "list_classes",
    "list_m2ad_classes",
    "load_transforms",
    "manual_route",
    "mask_path_for",
    "natural_key",
    "open_m2ad_class",
    "open_mad_class",
    "parse_view_illumination",
    "split_normal_specimens",
]
