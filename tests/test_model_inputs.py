"""What a user meets first: attribute vectors of the wrong width are refused with the widths and
where the right names are, for every model that samples."""

import jax
import numpy as np
import pytest

from cmma_jax import configs, presets, workdirs
from cmma_jax.models import MODELS


@pytest.mark.parametrize("name", sorted(MODELS))
def test_sampling_with_the_wrong_attribute_width_names_the_problem(name):
    config = presets.resolve_config(configs.CONFIGS[name].get_config("tiny"))
    state = jax.eval_shape(lambda k: MODELS[name].init_state(k, config,
                                                             workdirs.example_batch(8, 5)),
                           jax.random.key(0))
    params = jax.tree_util.tree_map(lambda a: np.zeros(a.shape, a.dtype), state.params)
    with pytest.raises(ValueError, match=r"sample: the attribute vectors have 7 columns .*"
                                         r"attribute_names"):
        MODELS[name].sample(params, np.zeros((2, 7), np.float32), jax.random.key(0),
                            config=config)
