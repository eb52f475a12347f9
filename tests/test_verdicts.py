"""cmma_jax.verdicts: the classifier's share of faces that show an attribute, without and with it
switched on, on models whose faces say exactly which attributes they were given."""

import types

import jax.numpy as jnp
import numpy as np
import pytest

from cmma_jax import verdicts

NAMES = ["No_Eyewear", "Eyeglasses", "Male"]


def _fake_model(label, capability):
    """A model whose faces are the attribute vector it was given, painted as pixel rows."""

    def paint(y):  # row a of every face is attribute a's value; the rest is black
        b, a = y.shape
        bands = jnp.broadcast_to(jnp.asarray(y, jnp.float32)[:, :, None, None], (b, a, 64, 3))
        return jnp.concatenate([bands, jnp.zeros((b, 64 - a, 64, 3), jnp.float32)], axis=1)

    lib = types.SimpleNamespace(
        sample=lambda params, y, key, temperature=1.0, *, config: paint(y),
        edit=lambda params, x, y_from, y_to, *, config: paint(y_to))
    return types.SimpleNamespace(label=label, capabilities=frozenset({capability}),
                                 encoding="binary", model_lib=lib, config=None, params=None)


def _predict(images):
    # The "classifier": attribute a is shown when its painted band is bright.
    images = np.asarray(images)
    bands = np.stack([images[:, 0, 0, 0], images[:, 1, 0, 0], images[:, 2, 0, 0]], 1)
    return 0.2 + 0.6 * bands  # 0.8 where on, 0.2 where off


@pytest.mark.parametrize("capability", ["sample", "edit"])
def test_shares_off_and_on_and_exclusions_applied(capability):
    # 60 faces: a third with glasses (never with "no eyewear"), half of them men.
    glasses = np.arange(60) % 3 == 0
    raw = np.where(np.stack([~glasses, glasses, np.arange(60) % 2 == 0], 1), 1.0, -1.0)
    images = np.zeros((60, 64, 64, 3), np.float32)
    images[glasses, 1] = 1.0  # the real faces with glasses show them (to the "classifier")
    models = [_fake_model("a", capability), _fake_model("b", "other")]
    out = verdicts.switch_verdicts(models, images, raw, NAMES, ["Eyeglasses", "No_Eyewear"],
                                   _predict, capability=capability, num_faces=25)
    assert list(out["models"]) == ["a"]  # b cannot do it
    glasses_verdict = out["models"]["a"]["Eyeglasses"]
    assert glasses_verdict == {"off": 0.0, "on": 1.0, "n": 25}
    assert out["real"]["Eyeglasses"] == 1.0
    # Switching glasses on switched "no eyewear" off (it excludes them in the data): the faces
    # drawn from the switched vectors show no "no eyewear" band.
    no_eyewear = out["models"]["a"]["No_Eyewear"]
    assert no_eyewear["n"] == 20 and (no_eyewear["off"], no_eyewear["on"]) == (0.0, 1.0)
    table = verdicts.markdown(out, "t")
    assert "| a | 0% → **100%** | 0% → **100%** |" in table
