"""Packaging config that pyproject.toml cannot express: the list of packages.

The shipped weights, their model cards and the example images stay in the repository's top-level
``data/`` folder; a wheel installs it as the subpackage ``fer_lab._shipped`` (package_dir maps it
onto ``data/``), where :func:`fer_lab.shipped.shipped_dir` finds it.  Everything else is in
pyproject.toml.
"""
from setuptools import find_namespace_packages, setup

SHIPPED = {"fer_lab._shipped": "data"}

setup(
    # namespace finder: fer_lab/training/configs (YAML only, no __init__.py) is a package too
    packages=find_namespace_packages(include=["fer_lab", "fer_lab.*"], exclude=["*.__pycache__"])
    + ["fer_lab._shipped", "fer_lab._shipped.weights", "fer_lab._shipped.examples"],
    package_dir=SHIPPED,
    package_data={
        "fer_lab.training.configs": ["*.yaml"],
        "fer_lab._shipped.weights": ["*.safetensors", "*.md"],
        "fer_lab._shipped.examples": ["*.png", "*.jpg", "*.md"],
    },
    exclude_package_data={"": ["*.pyi"]},
)
