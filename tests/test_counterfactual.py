"""Tests of the true counterfactuals of `synthetic_faces` (issue #15): `FaceSpec.switch_attribute`,
`synthetic_faces.example_spec`, `split_specs`, `render_counterfactuals` and
`config_from_options`.

A counterfactual is the same face with one attribute switched: its spec differs from the
original's in that attribute alone (and in the hair colour that switches with a hair attribute),
switching back gives the original image bit for bit, and what changes in the image is only what
that attribute draws. The last point is checked against the face's geometry, re-derived here from
the nuisance parameters (not taken from the renderer): each changed pixel is mapped back to the
unrotated, unscaled face's coordinates and must lie in the region where that attribute draws.
"""

import math

import numpy as np
import pytest

from cmma_jax.data import _render, pipeline, synthetic_faces
from conftest import TINY_DATA_OPTIONS

NAMES = _render.ATTRIBUTE_NAMES
HAIR = _render.HAIR_COLOURS[:-1]  # the four hair attributes; "red" sets none
CONFIG = synthetic_faces.make_config(num_train=50, num_validation=50, num_test=50, seed=5)
NUM_FACES = 10  # faces of the test split checked per attribute

# Where each attribute draws, in the coordinates of the face before it is scaled, rotated and
# moved: units of output pixels of an unscaled face, x to the right, y down, (0, 0) at the centre
# of the head's ellipse; each region is (|x| at most, y from, y to). Read off the drawing code's
# numbers (_render.render_face): eyes at y = -3 (glasses +-4.2 about them, temples out to the
# side of the face), brows 5 above them (arched up to 3.4 higher), the nose at y = 5, the mouth at
# y = 12 (the moustache above it, the goatee on the chin, at most y = 23.3), the cheeks at
# (+-9.5, 6.5), the bangs between y = -18 and -7.5, the skin down the neck to the collar (y = 30);
# hair (and a male's jaw and face width) anywhere around the head and down to the shoulders.
EYES = (20.0, -15.0, 3.0)
NOSE = (6.0, -3.0, 12.0)
CHEEKS = (14.0, 2.0, 11.0)
MOUTH = (10.0, 3.0, 25.0)
FOREHEAD = (19.0, -20.0, -5.0)
SKIN = (19.0, -21.0, 31.0)
FIGURE = (23.0, -27.0, 34.0)  # head, hair and neck: nothing outside ever changes
REGIONS = {
    "Arched_Eyebrows": EYES, "Bushy_Eyebrows": EYES, "Eyeglasses": EYES, "Narrow_Eyes": EYES,
    "Big_Nose": NOSE, "Pointy_Nose": NOSE,
    "Rosy_Cheeks": CHEEKS,
    "Big_Lips": MOUTH, "Mouth_Slightly_Open": MOUTH, "Mustache": MOUTH, "Goatee": MOUTH,
    "Smiling": MOUTH, "Wearing_Lipstick": MOUTH,
    "Bangs": FOREHEAD,
    "Pale_Skin": SKIN,
    "Male": FIGURE, "Black_Hair": FIGURE, "Blond_Hair": FIGURE, "Brown_Hair": FIGURE,
    "Gray_Hair": FIGURE,
}
# A pixel is 1/scale <= 1.25 face units wide (its centre is within 0.63 of a stroke that touches
# it) and the nearest-neighbour rotation at twice the resolution moves a stroke by up to a quarter
# of a pixel: a changed pixel's centre may lie this far outside the region where it is drawn.
MARGIN = 1.0


def face_coordinates(nuisance):
    """(x, y), each [64, 64]: the centre of every output pixel in the face's own coordinates.

    The renderer draws the face centred at (32 + dx, 35 + dy) output pixels, `scale` output pixels
    per unit, then rotates it counter-clockwise by `angle` degrees about that centre.
    """
    rows, cols = np.mgrid[0:64, 0:64].astype(np.float64)
    px = cols + 0.5 - (32.0 + nuisance["dx"])
    py = rows + 0.5 - (35.0 + nuisance["dy"])
    t = math.radians(nuisance["angle"])
    # Undo the counter-clockwise rotation (on screen, with y down), then the scale.
    x = (math.cos(t) * px - math.sin(t) * py) / nuisance["scale"]
    y = (math.sin(t) * px + math.cos(t) * py) / nuisance["scale"]
    return x, y


def inside(region, x, y, margin=MARGIN):
    half, top, bottom = region
    return (np.abs(x) <= half + margin) & (y >= top - margin) & (y <= bottom + margin)


def changed_attributes(a, b):
    return {n for n in NAMES if a.attributes[n] != b.attributes[n]}


@pytest.fixture(scope="module")
def specs():
    return synthetic_faces.split_specs(CONFIG, "test", 0, NUM_FACES)


def test_every_attribute_has_a_region():
    assert set(REGIONS) == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_the_counterfactual_differs_only_in_the_switched_attribute(specs, name):
    for spec in specs:
        cf = spec.switch_attribute(name)
        assert cf.nuisance == spec.nuisance and cf.nuisance is not spec.nuisance
        assert cf.attributes[name] != spec.attributes[name]
        changed = changed_attributes(spec, cf)
        if name in HAIR:
            # The hair colours switch together: on turns the face's own colour off; off gives red.
            assert changed == {name} | ({spec.hair} if spec.hair in HAIR else set())
            assert cf.hair == (name if cf.attributes[name] else "red")
            assert sum(cf.attributes[h] for h in HAIR) == (cf.hair != "red")
        else:
            assert changed == {name} and cf.hair == spec.hair
        flipped = spec.attribute_vector() != cf.attribute_vector()
        assert {NAMES[i] for i in np.flatnonzero(flipped)} == changed
    with pytest.raises(KeyError, match="Unknown attribute"):
        specs[0].switch_attribute("Wearing_Hat")


def test_both_directions_occur_for_every_attribute(specs):
    for name in NAMES:
        values = {s.attributes[name] for s in specs}
        if name not in ("Gray_Hair",):  # 1 face in 8 has grey hair
            assert values == {False, True}, name


@pytest.mark.parametrize("name", NAMES)
def test_switching_back_gives_the_original_image_bitwise(specs, name):
    originals, _ = synthetic_faces.render_split(CONFIG, "test", 0, NUM_FACES)
    for spec, original in zip(specs, originals):
        cf = spec.switch_attribute(name)
        if name in HAIR and spec.hair not in (name, "red"):
            # Blond switched on turned (say) Black off; switching back is switching Black on.
            back = cf.switch_attribute(spec.hair)
        else:
            back = cf.switch_attribute(name)
        assert back == spec
        np.testing.assert_array_equal(_render.render_face(back), original)


def test_replace_attribute_leaves_another_hair_colour_alone(specs):
    black = next(s for s in specs if s.hair == "Black_Hair")
    assert black.replace_attribute("Blond_Hair", False) == black
    assert black.replace_attribute("Black_Hair", False).hair == "red"
    assert black.replace_attribute("Black_Hair", True) == black


@pytest.mark.parametrize("name", NAMES)
def test_switching_changes_only_what_the_attribute_draws(specs, name):
    """Some pixels change, and every changed pixel (any channel, any amount) lies in the region
    of `REGIONS` where the attribute draws (in the face's coordinates, `face_coordinates`); in
    particular the background away from the head and hair, and the clothes, never change."""
    cfs, cf_attributes = synthetic_faces.render_counterfactuals(CONFIG, "test", 0, NUM_FACES,
                                                                name)
    originals, _ = synthetic_faces.render_split(CONFIG, "test", 0, NUM_FACES)
    for i, spec in enumerate(specs):
        changed = np.any(cfs[i] != originals[i], axis=-1)
        assert changed.sum() > 0, f"{name} changes nothing on face {i}"
        x, y = face_coordinates(spec.nuisance)
        outside = changed & ~inside(REGIONS[name], x, y)
        assert not outside.any(), (
            f"{name} changes {outside.sum()} pixels of face {i} outside its region, e.g. at face "
            f"coordinates {list(zip(x[outside][:3].round(1), y[outside][:3].round(1)))}")
        assert not (changed & ~inside(FIGURE, x, y)).any()
        np.testing.assert_array_equal(cf_attributes[i],
                                      spec.switch_attribute(name).attribute_vector())


def test_the_regions_are_tight_enough_to_catch_a_wrong_one(specs):
    """The check above can fail: glasses drawn on a face change pixels outside the mouth's region,
    and a moustache changes pixels outside the eyes' region."""
    originals, _ = synthetic_faces.render_split(CONFIG, "test", 0, NUM_FACES)
    for name, wrong in (("Eyeglasses", MOUTH), ("Mustache", EYES), ("Male", SKIN)):
        cfs, _ = synthetic_faces.render_counterfactuals(CONFIG, "test", 0, NUM_FACES, name)
        caught = 0
        for i, spec in enumerate(specs):
            x, y = face_coordinates(spec.nuisance)
            changed = np.any(cfs[i] != originals[i], axis=-1)
            caught += (changed & ~inside(wrong, x, y)).any()
        assert caught == NUM_FACES, name


def test_the_specs_are_the_rendered_examples():
    images, attributes = synthetic_faces.render_split(CONFIG, "validation", 3, 9)
    for k, spec in enumerate(synthetic_faces.split_specs(CONFIG, "validation", 3, 9)):
        assert spec == synthetic_faces.example_spec(CONFIG, "validation", 3 + k)
        np.testing.assert_array_equal(_render.render_face(spec), images[k])
        np.testing.assert_array_equal(spec.attribute_vector(), attributes[k])
    with pytest.raises(IndexError, match="has 50"):
        synthetic_faces.example_spec(CONFIG, "test", 50)
    with pytest.raises(IndexError, match="has 50"):
        synthetic_faces.render_counterfactuals(CONFIG, "test", 45, 51, "Male")
    with pytest.raises(ValueError, match="Unknown split"):
        synthetic_faces.split_specs(CONFIG, "dev", 0, 1)
    with pytest.raises(KeyError, match="Unknown attribute"):
        synthetic_faces.render_counterfactuals(CONFIG, "test", 0, 1, "Wearing_Hat")


def test_the_specs_are_what_the_prepared_dataset_holds(tiny_data_dir):
    """`example_spec` of the variant a config's `data.options` names renders exactly the records
    of the prepared dataset (the shared tiny one)."""
    config = synthetic_faces.config_from_options({**TINY_DATA_OPTIONS, "num_workers": 3,
                                                  "seed": None})
    assert config.split_sizes() == {"train": 256, "validation": 32, "test": 32}
    for split in ("validation", "test"):
        source = pipeline.data_source("synthetic_faces", split, prepared_dir=tiny_data_dir,
                                      options=TINY_DATA_OPTIONS)
        for i in (0, 7, len(source) - 1):
            spec = synthetic_faces.example_spec(config, split, i)
            np.testing.assert_array_equal(_render.render_face(spec), source[i]["image"])
            np.testing.assert_array_equal(spec.attribute_vector(), source[i]["attributes"])
    with pytest.raises(ValueError, match="does not take"):
        synthetic_faces.config_from_options({"max_bad_images": 3})
