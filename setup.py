"""threestudio_like: text or one image → textured 3-D asset by score distillation."""

import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).parent


class BuildWithConfigs(build_py):
    """Ship ``configs/`` inside the package (``threestudio_like/configs``) for non-editable installs."""

    def run(self):
        super().run()
        target = Path(self.build_lib) / "threestudio_like" / "configs"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(HERE / "configs", target)


setup(
    name="threestudio_like",
    version="0.1.0",
    description="Text/image to textured 3D by score distillation (SDS, VSD, Zero123), CPU-testable",
    long_description=(HERE / "README.md").read_text(encoding="utf-8") if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["threestudio_like", "threestudio_like.*"]),
    include_package_data=True,
    package_data={"threestudio_like": ["assets/**/*", "export/viewer/*", "eval/data/*"]},
    cmdclass={"build_py": BuildWithConfigs},
    install_requires=[
        "torch>=2.1",
        "numpy",
        "diffusers>=0.30",
        "transformers>=4.40",
        "accelerate",
        "peft>=0.12",
        "pytorch-optimizer>=4.1",  # Adan (optimizer.name: Adan); 4.1 is the version tested
        "safetensors",
        "hydra-core>=1.3",
        "omegaconf>=2.3",
        "imageio>=2.30",
        "imageio-ffmpeg",
        "trimesh",
        "xatlas",
        "PyMCubes",
        "tqdm",
        "scipy",
    ],
    extras_require={
        # CUDA fast paths (ops/backend.py picks them when installed), built from their sources
        # (need nvcc and a CUDA torch; nerfacc builds its extension on first use):
        "cuda": [
            "tinycudann @ git+https://github.com/NVlabs/tiny-cuda-nn/#subdirectory=bindings/torch",
            "nvdiffrast @ git+https://github.com/NVlabs/nvdiffrast/",
            "nerfacc==0.5.3",
            "gsplat>=1.5",
        ],
        # Hydra launcher plugins for multirun on SLURM / a Ray cluster (docs/real-size.md):
        "launchers": ["hydra-submitit-launcher>=1.2", "hydra-ray-launcher>=1.2"],
        "dev": ["pytest>=8", "pytest-timeout", "tensorboard", "ruff==0.17.6"],
    },
    entry_points={"console_scripts": ["threestudio-like=threestudio_like.cli:console_main"]},
)
