"""Build script. The metadata lives in setup.cfg; this file only says which packages the wheel holds.

The shipped data stays in the repository's top-level ``data/`` folder (design card) and is mapped into the package
as ``fmq_np/data`` (``data/models`` as ``fmq_np/data/models``): the wheel carries ``data/*.npz``,
``data/PROVENANCE.md`` (with ``data/build_data.py``, a harmless script module) and whatever ``data/models/*.h5``
exist at build time; ``fmq_np.datasets.data_dir()`` finds them there. A checkout or an editable install reads
``data/`` itself. The package list is computed (every ``fmq_np`` subpackage plus the mapped folders), so a new
subpackage needs no edit here.
"""
import os

from setuptools import find_packages, setup

packages = find_packages(include=["fmq_np", "fmq_np.*"]) + ["fmq_np.data"]
package_dir = {"fmq_np.data": "data"}
package_data = {"fmq_np.data": ["*.npz", "PROVENANCE.md"]}
if os.path.isdir(os.path.join("data", "models")):      # git keeps no empty folder: a fresh clone may lack it
    packages.append("fmq_np.data.models")
    package_dir["fmq_np.data.models"] = os.path.join("data", "models")
    package_data["fmq_np.data.models"] = ["*.h5"]

setup(packages=packages, package_dir=package_dir, package_data=package_data)
