"""The networks of the four models and the layers they are built of.

  layers.py    convolutions (`Conv`, `conv2d`, with the fast CPU path of `cmma_jax.fast_conv`),
               2x2 max-pooling, 2x nearest upsampling, `soft_clip`, dense Gaussian heads, dtypes.
  networks.py  the attribute MLP f, the image encoder h (and its `ConvTrunk`), the image decoder g,
               the CGAN discriminator, the VLAE's ladder encoder and decoder.

Everything public in both is re-exported here (`from cmma_jax import nets; nets.ImageEncoder`), as
are the presets' `PRESETS`, `SIZE_FIELDS` and `resolve_sizes` (defined in `cmma_jax.presets`).
"""

from cmma_jax.nets.layers import (COMPUTE_DTYPES, CONV_IMPLS, Conv, ConvParams, GaussianHeads, compute_dtype,
                                  concat_attributes, conv2d, dense, flatten, max_pool_2x2,
                                  resolve_conv_impl, soft_clip, upsample_nearest_2x)
from cmma_jax.nets.networks import (DECODER_VARIANCES, ENCODER_KERNELS, ENCODER_SPATIAL,
                                    IMAGE_CHANNELS,
                                    NUM_LADDER_LAYERS, AttributeMLP, ConvTrunk, Discriminator,
                                    ImageDecoder, ImageEncoder, ImageHeads, LadderDecoder,
                                    LadderEncoder)
from cmma_jax.presets import DEFAULT_DECODER_SIGMA, PRESETS, SIZE_FIELDS, resolve_sizes

__all__ = [
    "PRESETS", "SIZE_FIELDS", "resolve_sizes", "DEFAULT_DECODER_SIGMA", "COMPUTE_DTYPES", "compute_dtype", "max_pool_2x2",
    "upsample_nearest_2x", "soft_clip", "CONV_IMPLS", "resolve_conv_impl", "conv2d", "ConvParams",
    "Conv", "dense", "flatten", "concat_attributes", "GaussianHeads", "AttributeMLP", "ConvTrunk",
    "ENCODER_KERNELS", "ENCODER_SPATIAL", "IMAGE_CHANNELS", "DECODER_VARIANCES", "ImageEncoder", "ImageHeads",
    "ImageDecoder", "Discriminator", "LadderEncoder", "LadderDecoder", "NUM_LADDER_LAYERS",
]
