"""Plain backdrops: an object photographed in front of a paper sweep, a wall or a cloth of any colour.

Everything after loading expects the object on one exact background colour, as renders have it
(white in MAD). A photograph's backdrop is only nearly plain: the light falls off across it, the
sensor adds noise, JPEG rings at edges, and its colour is whatever hung behind the object. A
foreground test against white then takes the whole backdrop for object, and a light-grey backdrop
already breaks pose search and comparison. So an opaque image whose border is a plain backdrop has
that backdrop replaced by the background colour before anything else looks at it: the backdrop is
fitted as a smooth colour field (a quadratic in x and y per channel, which follows light fall-off
and vignetting), every pixel gets an opacity from its distance to that field measured against the
backdrop's own noise, and the backdrop's share of each pixel is swapped for the background colour.

Images with an alpha channel are composited as they are; borders that are not plain (a table, a
cluttered room) are left alone and reported, since telling the object from clutter needs more than
one image.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from omnipose.core.image import composite_on_background, read_image_rgba, resize_image

BORDER_SHARE = 0.03
"""Width of the border ring the backdrop is first fitted on, as a share of the image's shorter side."""
PLAIN_TOLERANCE = 0.1
"""A border pixel within this of the border's median colour (in every channel) counts as backdrop."""
PLAIN_SHARE = 0.6
"""A border is a plain backdrop when at least this share of its pixels counts as backdrop (the object
may touch the frame)."""
NOISE_SIGMAS = 4.0
"""A pixel further than this many noise deviations from the fitted backdrop starts to count as object."""
MIN_EDGE = 0.03
"""The least colour distance from the backdrop at which a pixel starts to count as object, so that a
noise-free backdrop does not swallow anti-aliased edges."""
RAMP = 0.05
"""Colour distance over which a pixel's opacity rises from 0 to 1 beyond that start."""
PINHOLE_SHARE = 0.0005
"""An enclosed patch of backdrop colour up to this share of the image (at least 2 pixels) may be object: a
highlight, when it looks like one (``HIGHLIGHT_LEVEL``, ``HIGHLIGHT_TINT``)."""
HIGHLIGHT_LEVEL = 0.75
"""An enclosed patch is taken for a highlight only where every channel of its mean colour is at least this."""
HIGHLIGHT_TINT = 0.15
"""... and where its channels differ by at most this: a highlight has the light's colour, nearly white in a
white-balanced photograph (a light pastel backdrop, whose gaps are not highlights, differs by more)."""
OUTLINE_WIDTH = 1
"""Pixels inside the object's outline whose opacity is matted rather than taken as 1."""
EDGE_SIGMA = 1.0
"""Blur (pixels) that carries the object's colour out to the mixed pixels of its outline."""
MIN_EDGE_CONTRAST = 0.1
"""Below this colour distance between the object and the backdrop beside it, an outline pixel keeps
the opacity of the distance ramp: the matting line is too short to place it on."""
UNCHANGED = 2.0 / 255.0
"""A backdrop within this of the background colour everywhere, with no more noise than that, is the
background already (a render): the image is left as it is."""


@dataclass(frozen=True)
class Backdrop:
    """A plain backdrop found in an image.

    colour: (3,) the fitted backdrop at the image centre; noise: standard deviation of the backdrop's
    pixels about the fitted field (the largest channel's); share: the share of the border it covers.
    """

    colour: tuple[float, float, float]
    noise: float
    share: float
    field: np.ndarray
    """(H, W, 3) the fitted backdrop colour at every pixel."""

    def is_background(self, background) -> bool:
        """Whether this backdrop already is the plain ``background`` colour (a render's)."""
        colour = np.broadcast_to(np.asarray(background, dtype=np.float32), (3,))
        return bool(np.abs(self.field - colour).max() <= UNCHANGED and self.noise <= UNCHANGED)

    def opacity(self, image: np.ndarray) -> np.ndarray:
        """How much of each pixel of image (H, W, 3) is object rather than backdrop: (H, W) in [0, 1].

        A pixel far enough from the backdrop is object. Near the outline, where a pixel mixes the two, its
        opacity is where it lies on the line from the backdrop to the object's colour beside it
        (known-background matting). What the object encloses is filled only where it is a small highlight
        (``_highlights``): any other enclosed patch is backdrop seen through a gap, and a part of the
        backdrop's own colour is lost the same way in every view.
        """
        from scipy.ndimage import binary_dilation, binary_erosion, gaussian_filter, label

        distance = np.abs(image - self.field).max(-1)
        start = max(NOISE_SIGMAS * self.noise, MIN_EDGE)
        alpha = np.clip((distance - start) / RAMP, 0.0, 1.0).astype(np.float32)
        # JPEG rings and render noise leave faint specks around the object: a patch that nowhere
        # stands out from the backdrop fully is no part of it.
        patches, _ = label(alpha > 0.0, structure=np.ones((3, 3)))
        solid_patches = np.unique(patches[alpha >= 1.0])
        alpha[~np.isin(patches, solid_patches[solid_patches > 0])] = 0.0
        shape = alpha > 0.5
        shape |= self._highlights(image, shape)
        solid = binary_erosion(shape, iterations=OUTLINE_WIDTH)
        alpha[solid] = 1.0
        weight = gaussian_filter(solid.astype(np.float32), EDGE_SIGMA)
        beside = np.stack([gaussian_filter(image[..., c] * solid, EDGE_SIGMA) for c in range(3)], -1)
        contrast = beside / np.maximum(weight, 1e-6)[..., None] - self.field
        squared = (contrast * contrast).sum(-1)
        outline = binary_dilation(shape, iterations=1) & ~solid & (weight > 0.02) & (squared > MIN_EDGE_CONTRAST**2)
        projected = ((image - self.field) * contrast).sum(-1) / np.maximum(squared, 1e-6)
        alpha[outline] = np.clip(projected[outline], 0.0, 1.0)
        return alpha

    @staticmethod
    def _highlights(image: np.ndarray, shape: np.ndarray) -> np.ndarray:
        """The small patches the object ``shape`` (H, W) encloses that are its own highlights: (H, W) bool.

        A highlight on light plastic in front of light paper matches the backdrop, and only there: it has
        the light's colour, bright and nearly white. A patch of a coloured or darker backdrop, or a larger
        one, is the backdrop seen through a gap, as the lego's studs and axle holes show it; one of one or two
        pixels is the object's, whatever its colour (a speck of noise on a face).
        """
        from scipy.ndimage import binary_fill_holes, label, mean

        holes, count = label(binary_fill_holes(shape) & ~shape)
        if count == 0:
            return np.zeros_like(shape)
        index = np.arange(1, count + 1)
        sizes = np.bincount(holes.ravel(), minlength=count + 1)[1:]
        colour = np.stack([mean(image[..., c], holes, index) for c in range(3)], -1)
        white = (colour.min(-1) >= HIGHLIGHT_LEVEL) & (colour.max(-1) - colour.min(-1) <= HIGHLIGHT_TINT)
        small = sizes <= max(PINHOLE_SHARE * shape.size, 2)
        return np.isin(holes, index[(small & white) | (sizes <= 2)])


def find_backdrop(image: np.ndarray) -> Backdrop | None:
    """The plain backdrop of image (H, W, 3) float in [0, 1], or None when its border is not plain."""
    height, width = image.shape[:2]
    ring = max(2, round(BORDER_SHARE * min(height, width)))
    border = np.zeros((height, width), bool)
    border[:ring], border[-ring:], border[:, :ring], border[:, -ring:] = True, True, True, True
    pixels = image[border]
    plain = np.abs(pixels - np.median(pixels, axis=0)).max(-1) < PLAIN_TOLERANCE
    share = float(plain.mean())
    if share < PLAIN_SHARE:
        return None
    basis = _quadratic_basis(height, width)
    members = border.copy()
    members[border] = plain
    # First on the border alone, then on every pixel that looks like the fitted backdrop, so that the
    # middle of the frame, where the object stands, is fitted from the backdrop seen around it there.
    for _ in range(2):
        coefficients, *_ = np.linalg.lstsq(basis[members.ravel()], image[members].astype(np.float64), rcond=None)
        field = (basis @ coefficients).reshape(height, width, 3).astype(np.float32)
        residual = image[members] - field[members]
        noise = float((1.4826 * np.median(np.abs(residual - np.median(residual, axis=0)), axis=0)).max())
        members = np.abs(image - field).max(-1) < max(NOISE_SIGMAS * noise, MIN_EDGE)
    colour = tuple(float(c) for c in np.clip(field[height // 2, width // 2], 0.0, 1.0))
    return Backdrop(colour, noise, share, np.clip(field, 0.0, 1.0))


def replace_backdrop(image: np.ndarray, background=1.0) -> tuple[np.ndarray, Backdrop | None]:
    """image (H, W, 3) with its plain backdrop replaced by the ``background`` colour.

    Returns the image (float32) and the backdrop found: None, and the image unchanged, when the border
    is not plain; the image also unchanged when the backdrop already is the background (a render).
    """
    image = np.asarray(image, dtype=np.float32)
    colour = np.broadcast_to(np.asarray(background, dtype=np.float32), (3,))
    if _border_is(image, colour):  # a render on its background: nothing to fit
        field = np.broadcast_to(colour, image.shape)
        return image, Backdrop(tuple(float(c) for c in colour), 0.0, 1.0, field)
    backdrop = find_backdrop(image)
    if backdrop is None:
        return image, None
    if backdrop.is_background(colour):
        return image, backdrop
    alpha = backdrop.opacity(image)[..., None]
    # An outline pixel mixes object and backdrop: its backdrop share is swapped for the background's.
    # Pure backdrop becomes the background exactly, noise and all.
    out = np.where(alpha > 0.0, image + (1.0 - alpha) * (colour - backdrop.field), colour)
    return np.clip(out, 0.0, 1.0).astype(np.float32), backdrop


def is_transparent(image: np.ndarray) -> bool:
    """Whether image (H, W, C) has an alpha channel that leaves any pixel less than opaque."""
    return image.shape[-1] == 4 and float(image[..., 3].min()) < 1.0


def on_background(rgba: np.ndarray, background=1.0, size: tuple[int, int] | None = None,
                  backdrop: bool = True) -> tuple[np.ndarray, Backdrop | None]:
    """RGB (H, W, 3) on the ``background`` colour from rgba (H, W, 4) or (H, W, 3), resized to ``size``
    (width, height) when given: an image with any transparency is alpha-composited; an opaque one has
    its plain backdrop replaced (``replace_backdrop``), at the size it is used at, so that training
    views and queries go through the same resampling. ``backdrop=False`` leaves opaque images as they
    are (the backdrop becomes part of the object; for ablations). Returns the image and the backdrop
    found (None for a transparent image, a border that is not plain, or ``backdrop=False``)."""
    def sized(image):
        return image if size is None or (image.shape[1], image.shape[0]) == tuple(size) else resize_image(image, size)

    if is_transparent(rgba):
        return sized(composite_on_background(rgba, background)), None
    rgb = sized(np.ascontiguousarray(rgba[..., :3], dtype=np.float32))
    return replace_backdrop(rgb, background) if backdrop else (rgb, None)


def read_on_background(path, background=1.0, size: tuple[int, int] | None = None,
                       backdrop: bool = True) -> tuple[np.ndarray, Backdrop | None]:
    """``on_background`` of the image file at ``path`` (DataError naming a missing or damaged file)."""
    return on_background(read_image_rgba(path), background, size, backdrop)


def _border_is(image: np.ndarray, colour: np.ndarray) -> bool:
    """Whether every pixel on the image's edge is within ``UNCHANGED`` of colour (3,)."""
    edge = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    return bool(np.abs(edge - colour).max() <= UNCHANGED)


def _quadratic_basis(height: int, width: int) -> np.ndarray:
    """(H * W, 6) the terms 1, x, y, x^2, xy, y^2 of every pixel, x and y in [-1, 1]."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    x = (x + 0.5) / width * 2.0 - 1.0
    y = (y + 0.5) / height * 2.0 - 1.0
    return np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], -1).reshape(-1, 6)
