"""Build and install Orochi's Python side.

The Cython kernels under ``cython_kernels/`` are compiled into the package
``orochi_fdw.kernels`` (one extension module per ``.pyx`` file); the Python
package ``orochi_fdw`` carries the logic that Postgres backends run through the
C bridge in ``pgext/``.

Set ``OROCHI_DEBUG_KERNELS=1`` to build the kernels with bounds and wraparound
checks turned back on (used for a debug test run).
"""
import glob
import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup

DEBUG_KERNELS = os.environ.get("OROCHI_DEBUG_KERNELS") == "1"

COMPILER_DIRECTIVES = {
    "language_level": "3",
    "boundscheck": DEBUG_KERNELS,
    "wraparound": DEBUG_KERNELS,
    "cdivision": not DEBUG_KERNELS,
    "initializedcheck": DEBUG_KERNELS,
    "embedsignature": True,
}


def kernel_extensions():
    extensions = []
    for source in sorted(glob.glob(os.path.join("cython_kernels", "*.pyx"))):
        name = os.path.splitext(os.path.basename(source))[0]
        extensions.append(
            Extension(
                f"orochi_fdw.kernels.{name}",
                [source],
                include_dirs=[numpy.get_include(), "cython_kernels"],
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
                extra_compile_args=["-O3"],
            )
        )
    return cythonize(
        extensions,
        include_path=["cython_kernels"],
        compiler_directives=COMPILER_DIRECTIVES,
        quiet=True,
    )


# The wrappers orochi_fdw.testing ships for the bridge's tests, benchmarks and demo.
TEST_WRAPPERS = [
    f"{name} = orochi_fdw.testing.wrappers:{name}"
    for name in ("SeriesWrapper", "QualsEchoWrapper", "SortedWrapper", "ExactWrapper", "ErrorWrapper",
                 "SlowWrapper", "SleepWrapper", "HooksWrapper", "SpiTableWrapper", "EchoTypesWrapper",
                 "SpiProbeWrapper", "RowidBatchWrapper", "AggregatingWrapper", "CatalogWrapper",
                 "SnapshotProbeWrapper", "SqlWrapper", "FinalizerWrapper", "KernelWrapper", "LogWrapper",
                 "ReleaseWrapper")
] + [
    f"{name} = orochi_fdw.testing.bench_wrappers:{name}"
    for name in ("BatchBenchWrapper", "RowBenchWrapper", "TextRowBenchWrapper", "StripeFetchWrapper")
]

setup(
    name="orochi",
    version="0.2.0",
    description="HTAP for PostgreSQL: columnar tables, time series, sketches and scale-out",
    packages=find_packages(include=["orochi_fdw", "orochi_fdw.*"]),
    package_data={"orochi_fdw.kernels": ["*.pyi"]},
    ext_modules=kernel_extensions(),
    python_requires=">=3.11",
    install_requires=[
        "numpy>=1.26",
        "isal>=1.6",
        "lz4>=4",
        "zstandard>=0.22",
        "pyroaring>=0.4",
        "psycopg[binary]>=3.1",
        "pglast>=7",
        "usearch>=2.16",
        "duckdb>=2.0",
        "pyarrow>=15",
    ],
    entry_points={
        "console_scripts": ["orochi-sidecar = orochi_fdw.sidecar.__main__:main"],
        # Wrappers tables may name (orochi_fdw.bridge.wrappers): the columnar
        # engine, and the test wrappers, which load only while the
        # superuser-only setting orochi.allow_test_wrappers is on.
        "orochi.wrappers": ["columnar = orochi_fdw.columnar.table:ColumnarTable"],
        "orochi.test_wrappers": TEST_WRAPPERS,
    },
    zip_safe=False,
)
