"""Packaging for solo-mixmask: MixMask for Siamese self-supervised learning, solo-learn style."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
about: dict = {}
exec((HERE / "solo_mixmask" / "__version__.py").read_text(), about)

setup(
    name="solo-mixmask",
    version=about["__version__"],
    description="MixMask (filling-based masking with an asymmetric loss) for MoCo v2, BYOL, "
    "SimCLR and SimSiam, in the solo-learn style.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(include=["solo_mixmask", "solo_mixmask.*"]),
    include_package_data=True,
    package_data={"solo_mixmask": ["configs/*.yaml", "zoo/manifest.yaml"]},
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "lightning>=2.1,<3",
        "torchmetrics>=0.11",
        "omegaconf>=2.3",
        "hydra-core>=1.3",
        "timm>=0.9",
        "numpy",
        "pillow",
        "pyyaml",  # the zoo manifest
        "tqdm",  # download progress bars
        # The quickstart trains on scikit-learn's bundled 8x8 digits: real images, no download.
        "scikit-learn",
        # Figures of `report` and `show-masks`.
        "matplotlib",
        # Google Drive downloads of the official checkpoints in the model zoo.
        "gdown>=4.7",
    ],
    extras_require={
        "dali": ["nvidia-dali-cuda120"],
        "dev": ["pytest>=7", "pytest-timeout", "ruff"],
        # solo-learn 1.0.6 (the PyPI release is not usable) for running the MixMask variants inside
        # its own classes; building it needs setuptools<81, see docs/solo-learn.md.
        "solo": ["solo-learn @ git+https://github.com/vturrisi/solo-learn"
                 "@9187ea39c2c3f43c455ab06664d2b019a9802954"],
    },
    entry_points={"console_scripts": ["solo-mixmask=solo_mixmask.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
