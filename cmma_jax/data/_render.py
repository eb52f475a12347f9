"""Procedural face renderer behind the `synthetic_faces` dataset.

Only numpy and Pillow: this module is imported by worker processes that render examples in
parallel, so it stays free of JAX and tensorflow-datasets.

A face is a `FaceSpec`: 20 binary attributes (named as CelebA names them) plus nuisance
parameters that are not attributes (position, scale, rotation, skin tone within its class,
hair shade, eye colour, clothes, background, lighting). `render_face(spec)` draws it at twice
the output resolution with Pillow and box-filters it down to 64x64, so that thin strokes
(eyebrows, glasses) survive as grey levels instead of aliasing away.

Every attribute changes pixels that a classifier can see:

| attribute | what changes |
| --- | --- |
| Arched_Eyebrows | brows bend up in the middle (flat and sloped otherwise) |
| Bangs | a fringe of hair covers the forehead |
| Big_Lips | lips about 2.3x thicker |
| Big_Nose | nose about 1.6x larger |
| Black_Hair, Blond_Hair, Brown_Hair, Gray_Hair | hair colour (exclusive; red when none is set) |
| Bushy_Eyebrows | brows about 2.5x thicker |
| Eyeglasses | dark rings round both eyes, with a bridge and temples |
| Goatee | a dark patch of beard on the chin |
| Male | wider, squarer jaw and short hair; otherwise long hair down to the shoulders |
| Mouth_Slightly_Open | dark mouth interior (with teeth when smiling) |
| Mustache | a dark band between nose and upper lip |
| Narrow_Eyes | eye opening less than half as tall |
| Pale_Skin | very light, unsaturated skin; otherwise a tone from tan to dark brown |
| Pointy_Nose | a narrow downward-pointing wedge instead of a round tip with nostrils |
| Rosy_Cheeks | pink blush on both cheeks |
| Smiling | the mouth curves up at the corners and widens |
| Wearing_Lipstick | lips red instead of a darker shade of the skin |

Counterfactuals. Since a face is its spec, the same face with one attribute switched and
everything else unchanged is `render_face(spec.switch_attribute(name))`. The hair colours exclude
each other as the renderer draws them (`HAIR_COLOURS`: one colour per face, "red" when none of the
four hair attributes is set), so they switch together: switching a hair colour on turns the
face's other hair colour off; switching the face's own hair colour off gives the red hair the
renderer draws when none is set (`FaceSpec.replace_attribute`). `example_spec(seed, s, i)` is
the spec of example i of split s, and `render_counterfactual_range` renders counterfactuals of a
range of a split, the unit of work like `render_range`.
"""

from __future__ import annotations

import dataclasses
import math
import zlib

import numpy as np
from PIL import Image, ImageDraw

from cmma_jax.images import IMAGE_SHAPE

IMAGE_SIZE = IMAGE_SHAPE[0]  # faces are square
_SUPERSAMPLE = 2
_CANVAS = IMAGE_SIZE * _SUPERSAMPLE

# Named as CelebA names them, in CelebA's (alphabetical) order.
ATTRIBUTE_NAMES: tuple[str, ...] = (
    "Arched_Eyebrows",
    "Bangs",
    "Big_Lips",
    "Big_Nose",
    "Black_Hair",
    "Blond_Hair",
    "Brown_Hair",
    "Bushy_Eyebrows",
    "Eyeglasses",
    "Goatee",
    "Gray_Hair",
    "Male",
    "Mouth_Slightly_Open",
    "Mustache",
    "Narrow_Eyes",
    "Pale_Skin",
    "Pointy_Nose",
    "Rosy_Cheeks",
    "Smiling",
    "Wearing_Lipstick",
)

HAIR_COLOURS = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair", "red")
# Probabilities of the hair colours above; "red" sets none of the hair attributes.
HAIR_PROBABILITIES = (0.25, 0.25, 0.25, 0.125, 0.125)
_HAIR_RGB = {
    "Black_Hair": (28, 24, 24),
    "Blond_Hair": (232, 200, 118),
    "Brown_Hair": (112, 68, 36),
    "Gray_Hair": (168, 168, 172),
    "red": (178, 72, 30),
}
# Probability of each non-hair attribute being on; they are drawn independently so that every
# combination occurs (unlike CelebA, where e.g. Mustache is almost always Male).
ATTRIBUTE_PROBABILITY = 0.5

_PALE_SKIN = np.array([246.0, 226.0, 214.0])
# Non-pale tones are interpolated between these (tan .. dark brown).
_SKIN_LIGHT = np.array([214.0, 160.0, 112.0])
_SKIN_DARK = np.array([104.0, 64.0, 40.0])


@dataclasses.dataclass(frozen=True)
class FaceSpec:
    """Everything that determines one rendered face.

    Attributes:
        attributes: name -> bool for every name in `ATTRIBUTE_NAMES`.
        hair: one of `HAIR_COLOURS`.
        nuisance: name -> float, the variation that is not an attribute (see `sample_nuisance`).
    """

    attributes: dict[str, bool]
    hair: str
    nuisance: dict[str, float]

    def replace_attribute(self, name: str, value: bool) -> "FaceSpec":
        """The same face (same nuisance) with one attribute set to `value`.

        The hair colours are exclusive, as the renderer draws them: setting one on clears the
        others; setting the face's own hair colour off gives red hair (none set); setting off a
        colour the face does not have changes nothing.
        """
        if name not in ATTRIBUTE_NAMES:
            raise KeyError(f"Unknown attribute {name!r}; expected one of {ATTRIBUTE_NAMES}.")
        attributes = dict(self.attributes)
        hair = self.hair
        if name in HAIR_COLOURS and (value or hair == name):
            for other in HAIR_COLOURS[:-1]:
                attributes[other] = False
            hair = name if value else "red"
        attributes[name] = bool(value)
        return FaceSpec(attributes=attributes, hair=hair, nuisance=dict(self.nuisance))

    def switch_attribute(self, name: str) -> "FaceSpec":
        """The counterfactual face: attribute `name` switched (on -> off, off -> on), every other
        attribute and all the nuisance unchanged, except the hair colours that switch with it
        (see `replace_attribute`: a hair colour switched on turns the face's own colour off; the
        face's hair colour switched off gives red hair)."""
        if name not in ATTRIBUTE_NAMES:
            raise KeyError(f"Unknown attribute {name!r}; expected one of {ATTRIBUTE_NAMES}.")
        return self.replace_attribute(name, not self.attributes[name])

    def attribute_vector(self) -> np.ndarray:
        """float32 [A] in {-1, +1}, in `ATTRIBUTE_NAMES` order (CelebA's encoding)."""
        return np.array([1.0 if self.attributes[n] else -1.0 for n in ATTRIBUTE_NAMES], np.float32)


# The nuisance parameters that are angles in radians over a whole turn (periodic): a probe of them
# should read their cosine and sine. ("angle", the head's tilt of +-12 degrees, is not periodic.)
PERIODIC_NUISANCE = ("bg_angle", "light_angle")


# The pose: the nuisance parameters that `jitter` scales, each with the centre it scales about
# (face centre offsets in output pixels, scale, tilt in degrees). Real face datasets are aligned
# (CelebA's "aligned" images, LFW's deep-funneled ones): a jitter near 0 draws faces like them.
POSE_NUISANCE = {"dx": 0.0, "dy": 0.0, "scale": 0.9, "angle": 0.0}


def check_jitter(jitter: float) -> float:
    """`jitter` as a float, or ValueError if it is not a number in [0, 1]."""
    if not isinstance(jitter, (int, float)) or not 0 <= jitter <= 1:
        raise ValueError(f"jitter must be a number in [0, 1] (0: aligned faces, 1: the full pose "
                         f"ranges); got {jitter!r}.")
    return float(jitter)


def sample_nuisance(rng: np.random.Generator, jitter: float = 1.0) -> dict[str, float]:
    """Draws the nuisance parameters: all uniform, all independent of the attributes.

    `jitter` scales the pose (`POSE_NUISANCE`: position, scale and tilt) about its centre (no
    shift, scale 0.9, upright): 1 draws the full ranges below, 0 an aligned face. The same numbers
    are drawn whatever `jitter` is, so a face differs between two jitters only in its pose.
    """
    check_jitter(jitter)
    u = rng.uniform
    n = {
        "dx": u(-5.0, 5.0),  # face centre offset, output pixels
        "dy": u(-4.0, 4.0),
        "scale": u(0.8, 1.0),
        "angle": u(-12.0, 12.0),  # degrees
        "skin_tone": u(0.0, 1.0),  # position between light and dark for non-pale skin
        "skin_jitter": u(-1.0, 1.0),
        "hair_shade": u(0.85, 1.12),
        "eye_hue": u(0.0, 1.0),
        "clothes_r": u(0.0, 255.0),
        "clothes_g": u(0.0, 255.0),
        "clothes_b": u(0.0, 255.0),
        "bg_r0": u(40.0, 230.0),
        "bg_g0": u(40.0, 230.0),
        "bg_b0": u(40.0, 230.0),
        "bg_r1": u(40.0, 230.0),
        "bg_g1": u(40.0, 230.0),
        "bg_b1": u(40.0, 230.0),
        "bg_angle": u(0.0, 2.0 * math.pi),
        "blob_x": u(0.0, 1.0),
        "blob_y": u(0.0, 1.0),
        "blob_r": u(6.0, 22.0),
        "blob_alpha": u(0.0, 0.5),
        "light_angle": u(0.0, 2.0 * math.pi),
        "light_strength": u(0.0, 0.22),
        "gain": u(0.88, 1.08),
        "glasses_colour": u(0.0, 1.0),
        "brow_tilt": u(-1.5, 1.5),
    }
    if jitter != 1.0:  # (1: the draws exactly, as release 1.0.0 of the dataset rendered them)
        for name, centre in POSE_NUISANCE.items():
            n[name] = centre + jitter * (n[name] - centre)
    return n


def sample_face(rng: np.random.Generator, jitter: float = 1.0) -> FaceSpec:
    """Draws attributes (independent Bernoulli, one categorical hair colour) and nuisance (its
    pose scaled by `jitter`, see `sample_nuisance`)."""
    hair = HAIR_COLOURS[int(rng.choice(len(HAIR_COLOURS), p=HAIR_PROBABILITIES))]
    attributes = {}
    for name in ATTRIBUTE_NAMES:
        if name in HAIR_COLOURS:
            attributes[name] = name == hair
        else:
            attributes[name] = bool(rng.uniform() < ATTRIBUTE_PROBABILITY)
    return FaceSpec(attributes=attributes, hair=hair, nuisance=sample_nuisance(rng, jitter))


def _rgb(colour) -> tuple[int, int, int]:
    return tuple(min(255, max(0, int(round(float(c))))) for c in colour[:3])


def _skin_colour(spec: FaceSpec) -> np.ndarray:
    n = spec.nuisance
    if spec.attributes["Pale_Skin"]:
        return _PALE_SKIN + 6.0 * n["skin_jitter"]
    t = n["skin_tone"]
    return (1.0 - t) * _SKIN_LIGHT + t * _SKIN_DARK + 8.0 * n["skin_jitter"]


_COORDS = (np.arange(IMAGE_SIZE, dtype=np.float32) - IMAGE_SIZE / 2 + 0.5) / IMAGE_SIZE


def _ramp(angle: float) -> np.ndarray:
    """A linear ramp in direction `angle`, float32 [64, 64], from about -0.7 to 0.7."""
    return math.cos(angle) * _COORDS[None, :] + math.sin(angle) * _COORDS[:, None]


def _background(n: dict[str, float]) -> np.ndarray:
    """A two-colour linear gradient in a random direction, float32 [64, 64, 3]."""
    t = np.clip(_ramp(n["bg_angle"]) + 0.5, 0.0, 1.0)[..., None]
    c0 = np.array([n["bg_r0"], n["bg_g0"], n["bg_b0"]], np.float32)
    c1 = np.array([n["bg_r1"], n["bg_g1"], n["bg_b1"]], np.float32)
    return c0 + t * (c1 - c0)


def render_face(spec: FaceSpec) -> np.ndarray:
    """Renders one face.

    Args:
        spec: the face to draw.

    Returns:
        uint8 [64, 64, 3].
    """
    a, n = spec.attributes, spec.nuisance
    k = _SUPERSAMPLE
    s = n["scale"] * k  # canvas pixels per unit; units are output pixels of an unscaled face
    cx = _CANVAS / 2 + n["dx"] * k
    cy = _CANVAS / 2 + 3 * k + n["dy"] * k

    def box(x, y, rx, ry):
        return (cx + (x - rx) * s, cy + (y - ry) * s, cx + (x + rx) * s, cy + (y + ry) * s)

    def pt(x, y):
        return (cx + x * s, cy + y * s)

    skin = _skin_colour(spec)
    skin_rgb = _rgb(skin)
    shadow_rgb = _rgb(skin * 0.78)
    nose_rgb = _rgb(skin * 0.66)
    hair = np.array(_HAIR_RGB[spec.hair], np.float64) * n["hair_shade"]
    hair_rgb = _rgb(hair)
    # Facial hair and brows are darker than both hair and skin, so that they stand out on any skin.
    darkest = np.minimum(hair, skin)
    brow_rgb = _rgb(darkest * 0.4)
    beard_rgb = _rgb(darkest * 0.42)

    # The figure is drawn on its own transparent layer, rotated, then composited.
    layer = Image.new("RGBA", (_CANVAS, _CANVAS), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer, "RGBA")
    # Clutter behind the figure: one translucent blob.
    bx, by, br = n["blob_x"] * _CANVAS, n["blob_y"] * _CANVAS, n["blob_r"] * k
    blob = _rgb([n["bg_r1"], n["bg_b0"], n["bg_g1"]]) + (int(255 * n["blob_alpha"]),)
    d.ellipse((bx - br, by - br, bx + br, by + br), fill=blob)
    male = a["Male"]
    half_w = 17.5 if male else 15.0  # half face width
    half_h = 20.0

    # Long hair behind the head (not male): down to the shoulders.
    if not male:
        d.rounded_rectangle(box(0, 4, half_w + 5.5, half_h + 9), radius=int(14 * s), fill=hair_rgb)
    # Neck and clothes.
    d.rectangle(box(0, half_h + 4, 6.5, 8), fill=shadow_rgb)
    clothes = _rgb([n["clothes_r"], n["clothes_g"], n["clothes_b"]])
    d.rounded_rectangle(box(0, half_h + 19, 27, 9), radius=int(8 * s), fill=clothes)
    # Head: an ellipse; a male jaw adds a wide rounded block at the bottom.
    d.ellipse(box(0, 0, half_w, half_h), fill=skin_rgb)
    if male:
        d.rounded_rectangle(box(0, 8, half_w - 0.3, 12), radius=int(7 * s), fill=skin_rgb)
    # Hair cap over the top of the head.
    d.chord(box(0, -3, half_w + 2, half_h), start=180, end=360, fill=hair_rgb)
    if not male:  # long hair frames the face down the sides
        d.rectangle(box(-half_w - 1.5, -4, 2.5, 13), fill=hair_rgb)
        d.rectangle(box(half_w + 1.5, -4, 2.5, 13), fill=hair_rgb)
    # Forehead: skin shows between hairline and brows unless there are bangs.
    d.ellipse(box(0, -5.5, half_w - 3.0, 7.5), fill=skin_rgb)
    if a["Bangs"]:
        top = -17.0
        bottom = -9.0
        pts = [pt(-half_w + 1.5, top)]
        teeth = 6
        for i in range(teeth + 1):
            x = -half_w + 1.5 + i * (2 * half_w - 3) / teeth
            pts.append(pt(x, bottom + (1.5 if i % 2 else -0.5)))
        pts.append(pt(half_w - 1.5, top))
        d.polygon(pts, fill=hair_rgb)
        d.chord(box(0, -9, half_w - 1, 9), start=180, end=360, fill=hair_rgb)

    # Eyes.
    eye_y = -3.0
    eye_dx = 7.0
    eye_ry = 1.1 if a["Narrow_Eyes"] else 2.6
    hue = n["eye_hue"]
    iris = _rgb([70 + 60 * hue, 60 + 70 * (1 - hue), 40 + 140 * hue])
    for side in (-1, 1):
        ex = side * eye_dx
        d.ellipse(box(ex, eye_y, 3.6, eye_ry), fill=(245, 245, 240))
        r = min(1.7, eye_ry)
        d.ellipse(box(ex, eye_y, r, r), fill=iris)
        d.ellipse(box(ex, eye_y, 0.7, min(0.7, eye_ry)), fill=(15, 15, 15))
        d.line(
            [pt(ex - 3.6, eye_y), pt(ex + 3.6, eye_y)],
            fill=(40, 30, 30),
            width=max(1, int(0.3 * s)),
        )

    # Eyebrows.
    brow_y = eye_y - 5.0
    brow_w = max(1, int((2.8 if a["Bushy_Eyebrows"] else 1.1) * s))
    tilt = n["brow_tilt"] * 0.4
    for side in (-1, 1):
        inner = (side * (eye_dx - 3.8), brow_y + tilt)
        outer = (side * (eye_dx + 4.2), brow_y - tilt)
        if a["Arched_Eyebrows"]:
            peak = (side * (eye_dx + 0.5), brow_y - 3.4)
            points = [pt(inner[0], inner[1] + 0.6), pt(*peak), pt(outer[0], outer[1] + 2.2)]
        else:
            points = [pt(*inner), pt(*outer)]
        d.line(points, fill=brow_rgb, width=brow_w, joint="curve")

    # Eyeglasses.
    if a["Eyeglasses"]:
        g = n["glasses_colour"]
        frame = _rgb([20 + 60 * g, 20, 20 + 60 * (1 - g)])
        width = max(2, int(1.0 * s))
        for side in (-1, 1):
            d.ellipse(box(side * eye_dx, eye_y, 5.2, 4.2), outline=frame, width=width)
            d.line(
                [pt(side * (eye_dx + 5.2), eye_y - 1), pt(side * (half_w + 0.5), eye_y - 2)],
                fill=frame,
                width=width,
            )
        d.line(
            [pt(-eye_dx + 5.2, eye_y - 0.5), pt(eye_dx - 5.2, eye_y - 0.5)], fill=frame, width=width
        )

    # Nose.
    nose_y = 5.0
    ns = 1.6 if a["Big_Nose"] else 1.0
    if a["Pointy_Nose"]:
        d.polygon(
            [
                pt(-2.4 * ns, nose_y - 4 * ns),
                pt(2.4 * ns, nose_y - 4 * ns),
                pt(0, nose_y + 3.4 * ns),
            ],
            fill=nose_rgb,
        )
    else:
        d.ellipse(box(0, nose_y + 0.5 * ns, 2.8 * ns, 2.2 * ns), fill=nose_rgb)
        for side in (-1, 1):
            d.ellipse(
                box(side * 1.3 * ns, nose_y + 1.5 * ns, 0.7 * ns, 0.5 * ns), fill=_rgb(skin * 0.45)
            )

    # Rosy cheeks.
    if a["Rosy_Cheeks"]:
        for side in (-1, 1):
            d.ellipse(box(side * 9.5, 6.5, 3.6, 2.8), fill=(235, 60, 90, 150))

    # Mouth.
    mouth_y = 12.0
    lip_t = 2.3 if a["Big_Lips"] else 1.0  # half thickness of each lip
    lips = (200, 25, 45) if a["Wearing_Lipstick"] else _rgb(skin * np.array([0.72, 0.5, 0.5]))
    mw = 7.5 if a["Smiling"] else 6.0  # half width
    if a["Mustache"]:
        d.polygon(
            [
                pt(-7.5, mouth_y - 2.0 - lip_t),
                pt(0, mouth_y - 4.8 - lip_t),
                pt(7.5, mouth_y - 2.0 - lip_t),
                pt(6.5, mouth_y - 1.0 - lip_t),
                pt(0, mouth_y - 2.5 - lip_t),
                pt(-6.5, mouth_y - 1.0 - lip_t),
            ],
            fill=beard_rgb,
        )
    if a["Goatee"]:
        d.ellipse(box(0, half_h - 2.5 + (2 if male else 0), 4.5, 3.8), fill=beard_rgb)
    if a["Smiling"]:
        # A crescent: the lower half of an ellipse, corners up.
        if a["Mouth_Slightly_Open"]:
            d.chord(box(0, mouth_y - 2, mw, 5.0), start=0, end=180, fill=(45, 10, 15))
            d.rectangle(box(0, mouth_y - 1.2, mw - 1.5, 0.8), fill=(240, 240, 235))
            d.arc(
                box(0, mouth_y - 2, mw, 5.0),
                start=0,
                end=180,
                fill=lips,
                width=max(1, int(lip_t * s)),
            )
            d.line(
                [pt(-mw, mouth_y - 2), pt(mw, mouth_y - 2)],
                fill=lips,
                width=max(1, int(0.8 * lip_t * s)),
            )
        else:
            d.arc(
                box(0, mouth_y - 3.5, mw, 4.5),
                start=0,
                end=180,
                fill=lips,
                width=max(2, int(1.6 * lip_t * s)),
            )
    else:
        if a["Mouth_Slightly_Open"]:
            d.ellipse(box(0, mouth_y, mw, 1.8 + lip_t), fill=lips)
            d.ellipse(box(0, mouth_y, mw - 1.6, 1.8), fill=(45, 10, 15))
        else:
            d.ellipse(box(0, mouth_y, mw, 0.4 + lip_t), fill=lips)
            d.line(
                [pt(-mw + 0.5, mouth_y), pt(mw - 0.5, mouth_y)],
                fill=_rgb(np.array(lips) * 0.6),
                width=max(1, int(0.3 * s)),
            )

    # Nearest-neighbour rotation at twice the resolution: the box filter below smooths its steps,
    # at a tenth of the cost of bilinear.
    layer = layer.rotate(n["angle"], resample=Image.NEAREST, center=(cx, cy))
    # Box-filter down in premultiplied alpha (no dark fringes), then composite over the background.
    fg = np.asarray(layer.convert("RGBa").reduce(k), dtype=np.float32)
    alpha = fg[..., 3:] * (1.0 / 255.0)
    image = fg[..., :3] + (1.0 - alpha) * _background(n)
    # Lighting: global gain times a linear ramp in a random direction.
    light = n["gain"] * (1.0 + 2.0 * n["light_strength"] * _ramp(n["light_angle"]))
    image = image * light[..., None]
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def example_rng(seed: int, split_index: int, index: int) -> np.random.Generator:
    """The generator of one example: independent of every other example and of the split sizes."""
    return np.random.default_rng([seed, split_index, index])


def example_spec(seed: int, split_index: int, index: int, jitter: float = 1.0) -> FaceSpec:
    """The spec of one example: what `render_example` draws."""
    return sample_face(example_rng(seed, split_index, index), jitter)


def render_example(seed: int, split_index: int, index: int,
                   jitter: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [64, 64, 3] image, float32 [A] attributes in {-1, +1}) of one example."""
    spec = example_spec(seed, split_index, index, jitter)
    return render_face(spec), spec.attribute_vector()


def render_range(args: tuple[int, int, int, int, float]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Renders examples `start .. stop-1` of a split; the unit of work of a worker process:
    `(seed, split_index, start, stop, jitter)`."""
    seed, split_index, start, stop, jitter = args
    return [render_example(seed, split_index, i, jitter) for i in range(start, stop)]


def render_range_compressed(args: tuple[int, int, int, int, float]) -> list[tuple[bytes, np.ndarray]]:
    """`render_range` with each image zlib-compressed (`zlib.compress(image.tobytes())`)."""
    return [
        (zlib.compress(image.tobytes()), attributes) for image, attributes in render_range(args)
    ]


def render_counterfactual_range(
    args: tuple[int, int, int, int, float, str],
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The counterfactuals of examples `start .. stop-1` of a split with one attribute switched
    (`FaceSpec.switch_attribute`): `(seed, split_index, start, stop, jitter, attribute)` -> a list
    of (uint8 [64, 64, 3] image, float32 [A] attributes in {-1, +1})."""
    seed, split_index, start, stop, jitter, name = args
    out = []
    for i in range(start, stop):
        spec = example_spec(seed, split_index, i, jitter).switch_attribute(name)
        out.append((render_face(spec), spec.attribute_vector()))
    return out
