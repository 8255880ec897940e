"""Package list for setuptools (the rest of the metadata is in pyproject.toml).

pyproject.toml cannot both discover packages and map a package onto another folder, so this
file does both: the `stream`, `engines` and `tools` packages as found, plus `medstream_configs`,
the top-level `configs/` folder installed as a data package (the ready pipelines, found by
`stream.bundled_configs` in any install).
"""

from setuptools import find_namespace_packages, setup

setup(
    packages=[
        *find_namespace_packages(include=["stream*", "engines*", "tools*"]),
        "medstream_configs",
    ],
    package_dir={"medstream_configs": "configs"},
)
