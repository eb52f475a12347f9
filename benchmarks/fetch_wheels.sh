#!/usr/bin/env bash
# Downloads (here, where pip reaches a registry) the wheels cmma_jax needs beyond what the H200
# machine's image has (jax, flax, optax, orbax, chex, numpy, absl-py, etils, protobuf, pillow,
# psutil, pyarrow, requests, tqdm, wrapt, attrs, pyyaml, cloudpickle, six, ... are there), for
# one CPython version on Linux x86_64. See benchmarks/ACCELERATOR.md.
#
#   benchmarks/fetch_wheels.sh [DEST=.whl] [PYTHON_VERSION=3.12]
#
# The versions are the ones this project is tested with. --no-deps: each needed dependency is
# named here; the install on the device (accelerator_check.sh) installs only those not present
# there, also with --no-deps, so that the image's own packages stay as they are. protobuf comes
# along only as a fallback, used if the image's protobuf is too old for tensorflow-metadata.
set -euo pipefail
DEST=${1:-.whl}
PYV=${2:-3.12}
mkdir -p "$DEST"
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
           --platform manylinux1_x86_64 --platform manylinux_2_24_x86_64)
PACKAGES=(
  tensorflow-datasets==4.9.10   # the data sets (tfds builders, array_record data sources)
  tensorflow-metadata==1.21.0   # imported by tfds
  googleapis-common-protos==1.76.0  # imported by tensorflow-metadata
  grain==0.2.18                 # the loader
  array-record==0.8.6           # the prepared files (binary)
  dm-tree==0.1.10               # tfds (binary)
  immutabledict==4.3.1          # tfds
  termcolor==3.3.0              # tfds
  toml==0.10.2                  # tfds
  simple-parsing==0.1.9         # tfds
  docstring-parser==0.18.0      # simple-parsing
  importlib-resources==7.1.0    # tfds (undeclared), see pyproject.toml
  portpicker==1.6.0             # grain
  ml-collections==1.1.0         # configs
  protobuf==6.33.5              # fallback only (see above)
)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" \
  --implementation cp "${PLATFORMS[@]}" -d "$DEST" "${PACKAGES[@]}"
# promise (imported by tfds) is published as an sdist only: build its (pure Python) wheel here.
python3 -m pip wheel -q --no-deps -w "$DEST" promise==2.3
ls -la "$DEST"
du -sh "$DEST"
