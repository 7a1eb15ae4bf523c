"""COLMAP sparse models (``cameras.bin``, ``images.bin``, ``points3D.bin``) and the one conversion to our cameras.

Pure numpy: reading and writing a model needs no pycolmap. The binary layout is COLMAP's documented
one (little-endian; ``images.bin`` lists each registered image with its world-to-camera quaternion
``(qw, qx, qy, qz)`` and translation, camera id, a NUL-terminated name and its 2-D points).

COLMAP poses are world-to-camera in the OpenCV camera (x right, y down, looking down +z);
omnipose's ``c2w`` is camera-to-world in the OpenGL camera (y up, looking down -z). The conversion
lives here only (``colmap_to_c2w`` / ``c2w_to_colmap``), and ``object_frame`` puts an
object-centric capture into a frame the radiance field likes: centred on the object, scaled to fit
the scene box, with +z up as in Blender.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from omnipose.core.errors import DataError
from omnipose.core.files import atomic_path

# model id -> (name, parameter names), as numbered by COLMAP.
CAMERA_MODELS = {
    0: ("SIMPLE_PINHOLE", ("f", "cx", "cy")),
    1: ("PINHOLE", ("fx", "fy", "cx", "cy")),
    2: ("SIMPLE_RADIAL", ("f", "cx", "cy", "k1")),
    3: ("RADIAL", ("f", "cx", "cy", "k1", "k2")),
    4: ("OPENCV", ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2")),
}
MODEL_IDS = {name: model_id for model_id, (name, _) in CAMERA_MODELS.items()}
_CV_TO_GL = np.diag([1.0, -1.0, -1.0])


@dataclass
class ColmapCamera:
    """One COLMAP camera: model name, size in pixels and its parameters in COLMAP's order."""

    camera_id: int
    model: str
    width: int
    height: int
    params: np.ndarray

    def pinhole(self) -> tuple[float, float, float, float]:
        """(fx, fy, cx, cy) in pixels, with COLMAP's pixel convention (pixel centres at +0.5), which is ours."""
        values = dict(zip(CAMERA_MODELS[MODEL_IDS[self.model]][1], self.params.tolist()))
        fx = values.get("fx", values.get("f"))
        return float(fx), float(values.get("fy", fx)), float(values["cx"]), float(values["cy"])

    def distortion(self) -> dict[str, float]:
        """The distortion coefficients by name (empty for the pinhole models)."""
        names = CAMERA_MODELS[MODEL_IDS[self.model]][1]
        return {name: float(v) for name, v in zip(names, self.params.tolist()) if name[0] in "kp"}


@dataclass
class ColmapImage:
    """One registered image: world-to-camera rotation as a unit quaternion (w, x, y, z), translation,
    camera id, file name, and its 2-D points ``xys: (P, 2)`` with their 3-D point ids (-1: none)."""

    image_id: int
    qvec: np.ndarray
    tvec: np.ndarray
    camera_id: int
    name: str
    xys: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    point3D_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


@dataclass
class ColmapModel:
    """A sparse model: cameras and images by id, and the 3-D points ``xyz: (M, 3)``, ``rgb: (M, 3)`` uint8,
    ``error: (M,)`` (mean reprojection error in pixels), ``ids: (M,)`` and ``tracks`` (per point, a
    (L, 2) int array of (image id, 2-D point index))."""

    cameras: dict[int, ColmapCamera]
    images: dict[int, ColmapImage]
    xyz: np.ndarray
    rgb: np.ndarray
    error: np.ndarray
    ids: np.ndarray
    tracks: list[np.ndarray]


# ----------------------------------------------------------------------------- rotations
def qvec_to_rotmat(qvec: np.ndarray) -> np.ndarray:
    """Rotation matrix (3, 3) of a quaternion (w, x, y, z); it need not be exactly unit length."""
    w, x, y, z = np.asarray(qvec, dtype=np.float64) / np.linalg.norm(qvec)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])  # fmt: skip


def rotmat_to_qvec(R: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) with w >= 0 of a rotation matrix (3, 3), by the eigenvector method
    (stable for every angle, including 180 degrees)."""
    (r00, r01, r02), (r10, r11, r12), (r20, r21, r22) = np.asarray(R, dtype=np.float64)
    K = np.array([
        [r00 - r11 - r22, 0, 0, 0],
        [r01 + r10, r11 - r00 - r22, 0, 0],
        [r02 + r20, r12 + r21, r22 - r00 - r11, 0],
        [r21 - r12, r02 - r20, r10 - r01, r00 + r11 + r22],
    ]) / 3.0  # fmt: skip
    values, vectors = np.linalg.eigh(K)
    x, y, z, w = vectors[:, np.argmax(values)]
    q = np.array([w, x, y, z])
    return q if w >= 0 else -q


# ----------------------------------------------------------------------------- conventions
def colmap_to_c2w(qvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
    """OpenGL camera-to-world (4, 4) float64 from COLMAP's world-to-camera (OpenCV axes) pose."""
    R = qvec_to_rotmat(qvec)
    c2w = np.eye(4)
    c2w[:3, :3] = R.T @ _CV_TO_GL
    c2w[:3, 3] = -R.T @ np.asarray(tvec, dtype=np.float64)
    return c2w


def c2w_to_colmap(c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(qvec, tvec): COLMAP's world-to-camera pose of an OpenGL camera-to-world (4, 4) or (3, 4)."""
    c2w = np.asarray(c2w, dtype=np.float64)
    R = (c2w[:3, :3] @ _CV_TO_GL).T
    return rotmat_to_qvec(R), -R @ c2w[:3, 3]


def object_frame(c2w: np.ndarray, points: np.ndarray, radius: float = 1.0) -> np.ndarray:
    """The similarity (4, 4) that puts an object-centric capture into the frame the field expects.

    c2w: (N, 4, 4) OpenGL cameras; points: (M, 3) the object's points (M may be 0).
    Centre: the middle of the points' 2nd-98th percentile box (robust to stray points), or where the
    optical axes meet when there are too few points. Up (+z): the mean of the cameras' up axes,
    since a photographer holds the camera upright (nerfstudio's choice too). Scale: the object's
    points reach ``radius`` from the centre, so that they fit the default scene box (+-1.5).
    Returns T with T @ c2w the new cameras (the rotation part of T is scaled; renormalise c2w's
    rotation with ``apply_similarity``).
    """
    c2w = np.asarray(c2w, dtype=np.float64)
    up = c2w[:, :3, 1].sum(0)
    if np.linalg.norm(up) < 1e-9:
        up = np.array([0.0, 0.0, 1.0])
    up /= np.linalg.norm(up)
    rotation = rotation_taking(up, np.array([0.0, 0.0, 1.0]))
    if len(points) >= 10:
        low, high = np.percentile(points, 2, axis=0), np.percentile(points, 98, axis=0)
        centre = 0.5 * (low + high)
        reach = np.percentile(np.linalg.norm(points - centre, axis=1), 98)
    else:
        forward = -c2w[:, :3, 2]
        projector = np.eye(3)[None] - forward[:, :, None] * forward[:, None, :]
        centre = np.linalg.lstsq(projector.sum(0), (projector @ c2w[:, :3, 3:4]).sum(0), rcond=None)[0][:, 0]
        reach = 0.25 * np.median(np.linalg.norm(c2w[:, :3, 3] - centre, axis=1))
    scale = radius / max(float(reach), 1e-12)
    T = np.eye(4)
    T[:3, :3] = scale * rotation
    T[:3, 3] = -scale * rotation @ centre
    return T


def apply_similarity(T: np.ndarray, c2w: np.ndarray) -> np.ndarray:
    """Cameras (N, 4, 4) moved by the similarity T (4, 4), their rotations kept orthonormal."""
    scale = np.cbrt(np.linalg.det(T[:3, :3]))
    out = np.array(c2w, dtype=np.float64, copy=True)
    out[:, :3, :3] = (T[:3, :3] / scale) @ out[:, :3, :3]
    out[:, :3, 3] = out[:, :3, 3] @ T[:3, :3].T + T[:3, 3]
    return out


def camera_similarity(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The similarity T (4, 4) that best takes the cameras ``source`` onto ``target`` (both (N, 4, 4)).

    Least squares on the camera centres (Umeyama), so it needs 3 or more cameras not on one line;
    ``apply_similarity(T, source)`` are then the source cameras in the target's frame. Use it to
    compare a reconstruction with known cameras, or to carry known poses into a reconstruction's
    frame (with the inverse of T).
    """
    a, b = np.asarray(source, np.float64)[:, :3, 3], np.asarray(target, np.float64)[:, :3, 3]
    if len(a) != len(b) or len(a) < 3:
        raise ValueError(f"camera_similarity needs the same 3 or more cameras on both sides, got {len(a)} and {len(b)}")
    mean_a, mean_b = a.mean(0), b.mean(0)
    u, s, vt = np.linalg.svd((b - mean_b).T @ (a - mean_a) / len(a))
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    spread = ((a - mean_a) ** 2).sum(1).mean()
    if spread < 1e-18:
        raise ValueError("camera_similarity: the source cameras all sit at one point")
    scale = float((s * np.diag(d)).sum() / spread)
    T = np.eye(4)
    T[:3, :3] = scale * (u @ d @ vt)
    T[:3, 3] = mean_b - T[:3, :3] @ mean_a
    return T


def rotation_taking(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation (3, 3) taking unit vector a to unit vector b."""
    v, c = np.cross(a, b), float(np.dot(a, b))
    if c < -1 + 1e-12:  # opposite: turn half a circle about any axis perpendicular to a
        axis = np.cross(a, [1.0, 0.0, 0.0] if abs(a[0]) < 0.9 else [0.0, 1.0, 0.0])
        axis /= np.linalg.norm(axis)
        return 2 * np.outer(axis, axis) - np.eye(3)
    skew = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + skew + skew @ skew / (1 + c)


# ----------------------------------------------------------------------------- binary files
class _Reader:
    def __init__(self, path: Path):
        self.path = path
        self.data = path.read_bytes()
        self.offset = 0

    def read(self, fmt: str):
        size = struct.calcsize("<" + fmt)
        if self.offset + size > len(self.data):
            raise DataError(f"{self.path} ends early: the COLMAP model is truncated. Re-export it from COLMAP.")
        values = struct.unpack_from("<" + fmt, self.data, self.offset)
        self.offset += size
        return values

    def array(self, dtype, count: int) -> np.ndarray:
        dtype = np.dtype(dtype).newbyteorder("<")
        if self.offset + dtype.itemsize * count > len(self.data):
            raise DataError(f"{self.path} ends early: the COLMAP model is truncated. Re-export it from COLMAP.")
        values = np.frombuffer(self.data, dtype, count, self.offset)
        self.offset += dtype.itemsize * count
        return values

    def name(self) -> str:
        end = self.data.find(b"\0", self.offset)
        if end < 0:
            raise DataError(f"{self.path} ends inside an image name: the COLMAP model is truncated.")
        name = self.data[self.offset : end].decode("utf-8")
        self.offset = end + 1
        return name


def read_colmap_model(folder: str | Path) -> ColmapModel:
    """Read ``cameras.bin``, ``images.bin`` and (when present) ``points3D.bin`` from a sparse model folder."""
    folder = Path(folder)
    for needed in ("cameras.bin", "images.bin"):
        if not (folder / needed).is_file():
            raise DataError(
                f"{folder} has no {needed}: give the folder of a COLMAP sparse model (e.g. sparse/0), "
                "or export the text model to binary with 'colmap model_converter --output_type BIN'."
            )
    reader = _Reader(folder / "cameras.bin")
    cameras = {}
    for _ in range(reader.read("Q")[0]):
        camera_id, model_id, width, height = reader.read("iiQQ")
        if model_id not in CAMERA_MODELS:
            raise DataError(
                f"camera {camera_id} in {folder / 'cameras.bin'} uses COLMAP model {model_id}, which omnipose does "
                f"not read (it reads {', '.join(name for name, _ in CAMERA_MODELS.values())}). Undistort the images "
                "with 'colmap image_undistorter' first."
            )
        name, params = CAMERA_MODELS[model_id]
        cameras[camera_id] = ColmapCamera(camera_id, name, width, height, reader.array(np.float64, len(params)).copy())
    reader = _Reader(folder / "images.bin")
    images = {}
    for _ in range(reader.read("Q")[0]):
        image_id, *pose, camera_id = reader.read("i7di")
        name = reader.name()
        count = reader.read("Q")[0]
        packed = reader.array(np.dtype([("x", "<f8"), ("y", "<f8"), ("id", "<i8")]), count)
        xys = np.stack([packed["x"], packed["y"]], -1) if count else np.zeros((0, 2))
        images[image_id] = ColmapImage(image_id, np.array(pose[:4]), np.array(pose[4:]), camera_id, name, xys,
                                       packed["id"].astype(np.int64))  # fmt: skip
    xyz, rgb, error, ids, tracks = np.zeros((0, 3)), np.zeros((0, 3), np.uint8), np.zeros(0), np.zeros(0, np.int64), []
    if (folder / "points3D.bin").is_file():
        reader = _Reader(folder / "points3D.bin")
        rows = []
        for _ in range(reader.read("Q")[0]):
            point_id, x, y, z, r, g, b, err, length = reader.read("Q3d3BdQ")
            rows.append((point_id, (x, y, z), (r, g, b), err))
            tracks.append(reader.array(np.int32, 2 * length).reshape(-1, 2).astype(np.int64))
        if rows:
            ids = np.array([row[0] for row in rows], np.int64)
            xyz = np.array([row[1] for row in rows], np.float64)
            rgb = np.array([row[2] for row in rows], np.uint8)
            error = np.array([row[3] for row in rows], np.float64)
    return ColmapModel(cameras, images, xyz, rgb, error, ids, tracks)


def write_colmap_model(model: ColmapModel, folder: str | Path) -> None:
    """Write the model as ``cameras.bin``, ``images.bin`` and ``points3D.bin`` in ``folder``, each atomically."""
    folder = Path(folder)
    parts = [struct.pack("<Q", len(model.cameras))]
    for camera in model.cameras.values():
        parts.append(struct.pack("<iiQQ", camera.camera_id, MODEL_IDS[camera.model], camera.width, camera.height))
        parts.append(np.asarray(camera.params, "<f8").tobytes())
    _write(folder / "cameras.bin", b"".join(parts))
    parts = [struct.pack("<Q", len(model.images))]
    for image in model.images.values():
        parts.append(struct.pack("<i7di", image.image_id, *np.asarray(image.qvec, float), *np.asarray(image.tvec, float),
                                 image.camera_id))  # fmt: skip
        parts.append(image.name.encode("utf-8") + b"\0")
        packed = np.zeros(len(image.xys), np.dtype([("x", "<f8"), ("y", "<f8"), ("id", "<i8")]))
        if len(image.xys):
            packed["x"], packed["y"], packed["id"] = image.xys[:, 0], image.xys[:, 1], image.point3D_ids
        parts.append(struct.pack("<Q", len(packed)) + packed.tobytes())
    _write(folder / "images.bin", b"".join(parts))
    parts = [struct.pack("<Q", len(model.xyz))]
    for index in range(len(model.xyz)):
        track = model.tracks[index] if index < len(model.tracks) else np.zeros((0, 2), np.int64)
        parts.append(struct.pack("<Q3d3BdQ", int(model.ids[index]), *model.xyz[index], *model.rgb[index].tolist(),
                                 float(model.error[index]), len(track)))  # fmt: skip
        parts.append(np.asarray(track, "<i4").tobytes())
    _write(folder / "points3D.bin", b"".join(parts))


def _write(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


# ----------------------------------------------------------------------------- to transforms.json
def transforms_from_model(model: ColmapModel, transform: np.ndarray | None = None, prefix: str = "") -> dict:
    """A transforms.json dictionary of the model's images, sorted by name, in omnipose's convention.

    transform: an optional similarity (4, 4) applied to the cameras (``object_frame``); it is kept as
    ``applied_transform`` (nerfstudio's key) so that COLMAP's frame can be recovered.
    prefix: prepended to each image name in ``file_path`` (e.g. 'train/good/').
    One pinhole camera with square pixels and a centred principal point is written as
    ``camera_angle_x`` (the Blender form every reader knows); anything else as nerfstudio's
    per-frame ``fl_x, fl_y, cx, cy, w, h``. Distortion is refused: undistort first.
    """
    images = sorted(model.images.values(), key=lambda image: image.name)
    if not images:
        raise DataError("the COLMAP model has no registered image: nothing to write. Check the reconstruction.")
    for camera in model.cameras.values():
        if any(abs(v) > 0 for v in camera.distortion().values()):
            raise DataError(
                f"COLMAP camera {camera.camera_id} ({camera.model}) has lens distortion {camera.distortion()}: "
                "omnipose renders pinhole cameras. Undistort the images first (colmap image_undistorter, or "
                "omnipose onboard, which does it)."
            )
    T = np.eye(4) if transform is None else np.asarray(transform, dtype=np.float64)
    c2w = apply_similarity(T, np.stack([colmap_to_c2w(image.qvec, image.tvec) for image in images]))
    intrinsics = [model.cameras[image.camera_id] for image in images]
    first = intrinsics[0]
    fx, fy, cx, cy = first.pinhole()
    one_camera = len({camera.camera_id for camera in intrinsics}) == 1
    simple = one_camera and abs(fx - fy) <= 1e-9 * fx and abs(cx - first.width / 2) < 1e-6 and abs(cy - first.height / 2) < 1e-6
    meta: dict = {}
    if simple:
        meta["camera_angle_x"] = float(2 * np.arctan(0.5 * first.width / fx))
    frames = []
    for image, camera, pose in zip(images, intrinsics, c2w):
        frame = {"file_path": prefix + image.name, "transform_matrix": pose.tolist()}
        if not simple:
            fx, fy, cx, cy = camera.pinhole()
            frame.update(fl_x=fx, fl_y=fy, cx=cx, cy=cy, w=int(camera.width), h=int(camera.height))
        frames.append(frame)
    meta["frames"] = frames
    if transform is not None:
        meta["applied_transform"] = T[:3].tolist()
    return meta


def load_colmap(
    model_folder: str | Path,
    images: str | Path | None = None,
    size: int | tuple[int, int] | None = None,
    background: float | tuple[float, float, float] = 1.0,
    progress: bool = True,
    backdrop: bool = True,
):
    """``PosedImages`` of a COLMAP sparse model, in the object frame (``object_frame``).

    model_folder: holds cameras.bin / images.bin (points3D.bin, when present, centres and scales the
    frame). images: the folder the model's image names are relative to; by default COLMAP's layout,
    ``<project>/images`` beside ``<project>/sparse/0``. backdrop: as ``load_transforms``.
    """
    from omnipose.data.blender import posed_images_from_meta

    model_folder = Path(model_folder)
    if images is None:
        candidates = [model_folder.parent / "images", model_folder.parent.parent / "images"]
        images = next((c for c in candidates if c.is_dir()), candidates[-1])
    images = Path(images)
    if not images.is_dir():
        raise DataError(f"no image folder at {images} for the COLMAP model {model_folder}: give the folder its images are in.")
    model = read_colmap_model(model_folder)
    c2w = np.stack([colmap_to_c2w(image.qvec, image.tvec) for image in model.images.values()])
    meta = transforms_from_model(model, object_frame(c2w, model.xyz))
    return posed_images_from_meta(meta, images, model_folder, size, background, None, progress, backdrop)
