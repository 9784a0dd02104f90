"""InstructRec-JAX: recommendation as instruction following, on a T5X-style JAX stack."""

import setuptools

# The JAX / TF stack is pinned to versions known to install together on Python 3.11
# (see ../shared/docs/T5X.md); tensorflow-text must match tensorflow's minor version.
INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "seqio==0.0.20",
    "tensorflow==2.21.0",
    "tensorflow-text==2.21.1",
    "tensorflow-datasets==4.9.10",
    "tensorstore==0.1.86",
    "gin-config==0.5.0",
    "sentencepiece==0.2.3",
    "safetensors==0.8.0",
    "msgpack>=1.0",
    "numpy>=1.26",
    "absl-py>=2.0",
    "matplotlib>=3.8",
]

EXTRAS_REQUIRE = {
    "test": ["pytest>=8"],
    # torch pinned exactly: an unpinned torch pulls a multi-GB CUDA build.
    "hf": ["torch==2.13.0", "transformers==5.24.0"],
}

setuptools.setup(
    name="instructrec-jax",
    version="0.1.0",
    description="Instruction-tuned Flan-T5 recommender on a T5X-style JAX stack",
    python_requires=">=3.11",
    packages=setuptools.find_packages(include=["instructrec_jax", "instructrec_jax.*"])
    + ["instructrec_jax.tasks"],
    # The top-level tasks/ folder installs as `instructrec_jax.tasks` (DESIGN.md). The gin/ folder is
    # found on the gin search path from the checkout (a `gin` package would shadow gin-config).
    package_dir={"instructrec_jax.tasks": "tasks"},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={"console_scripts": ["instructrec=instructrec_jax.cli:main"]},
)
