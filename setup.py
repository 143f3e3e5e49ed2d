"""Builds the Cython MessagePack codec in ext/ into pyqcore.serializer._cmsgpack.

A failed compile fails the build: pyqcore never falls back silently at install time
(PYQCORE_PUREPYTHON=1 selects the pure-Python codec at import time instead).
"""

from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(
        "pyqcore.serializer._cmsgpack",
        ["ext/_cmsgpack.pyx"],
        extra_compile_args=["-O3"],
    )
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    )
)
