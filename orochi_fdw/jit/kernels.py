"""Compiling kernels with numba, and their caches.

A kernel is keyed by its source (the expression's shape: constants are
arguments), the optimization level and numba's version.  With
``orochi.jit_cache_enabled`` a backend keeps the kernels it compiled, and
each kernel's source is written as a module into the cache directory
(``orochi.jit_cache_directory``, by default ``orochi_jit_cache`` under the
data directory), where numba's own cache (``cache=True``) keeps the machine
code beside it: a new backend loads it instead of compiling.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import time
from typing import Any

from orochi_fdw.jit.codegen import Kernel

#: kernels this backend compiled, by key
_memory: dict[str, Any] = {}


def setting(name: str, default: str) -> str:
    """An orochi.jit_* setting (its default outside a backend)."""
    try:
        from orochi_fdw.bridge import spi

        value = spi.setting(name)
    except Exception:  # noqa: BLE001 - outside a backend there are no settings
        value = None
    return default if value is None else value


def cache_enabled() -> bool:
    return setting("orochi.jit_cache_enabled", "on") == "on"


def optimization_level() -> int:
    return int(setting("orochi.jit_optimization_level", "3"))


def cache_directory() -> str:
    """The on-disk cache: the setting, or orochi_jit_cache in the data
    directory (a backend's working directory)."""
    configured = setting("orochi.jit_cache_directory", "")
    return configured or os.path.join(os.getcwd(), "orochi_jit_cache")


_numba_version: str | None = None


def _version() -> str:
    """numba's version, without importing it (planning a query that the
    JIT then declines must not pay for the import)."""
    global _numba_version
    if _numba_version is None:
        from importlib.metadata import version

        _numba_version = version("numba")
    return _numba_version


def key(kernel: Kernel, opt: int) -> str:
    text = f"{_version()}\n{opt}\n{kernel.source}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _set_opt(opt: int) -> None:
    from numba.core import config

    # numba reads its optimization level when it builds a function's code
    level = getattr(config, "_OptLevel", None)
    config.OPT = level(opt) if level is not None else opt


#: the kernel's two loops, ``kernel_fast`` compiled at its first batch without NULLs
_LOOPS = ("kernel", "kernel_fast")


def _compiled(func: Any) -> bool:
    """Whether a numba function has machine code in this backend."""
    return bool(getattr(func, "signatures", ()))


def _on_disk(k: str) -> set[str]:
    """The loops of kernel ``k`` whose machine code numba's cache holds
    (index files ``k_<key>.<loop>-<line>.py<version>.nbi``)."""
    prefix = f"k_{k}."
    try:
        names = os.listdir(os.path.join(cache_directory(), "__pycache__"))
    except OSError:
        return set()
    return {f[len(prefix):].partition("-")[0] for f in names if f.startswith(prefix) and f.endswith(".nbi")}


def is_cached(kernel: Kernel) -> bool:
    """Whether the kernel needs no compiling: each of its loops compiled in
    this backend or on disk."""
    if not cache_enabled():
        return False
    k = key(kernel, optimization_level())
    disk: set[str] | None = None
    for name, func in zip(_LOOPS, _memory.get(k, (None, None))):
        if func is not None and _compiled(func):
            continue
        if disk is None:
            disk = _on_disk(k)
        if name not in disk:
            return False
    return True


def load(kernel: Kernel, sample_args: tuple) -> tuple[Any, float, str]:
    """The functions ``kernel`` (compiled) and ``kernel_fast`` (compiled
    when first called: a scan whose batches all have NULLs never needs it),
    the seconds it took to get them and where they came from ("compiled",
    "backend cache", "disk cache").  ``sample_args`` are arguments of the
    right types (no rows) to compile ``kernel`` with."""
    opt = optimization_level()
    use_cache = cache_enabled()
    k = key(kernel, opt)
    if use_cache and k in _memory:
        return _memory[k], 0.0, "backend cache"
    t0 = time.perf_counter()
    _set_opt(opt)
    func = None
    if use_cache:
        func = _from_file(kernel, k)
    if func is None:
        namespace: dict[str, Any] = {"CACHE": False}
        exec(compile(kernel.source, f"<orochi jit kernel {k}>", "exec"), namespace)  # noqa: S102
        func = (namespace["kernel"], namespace["kernel_fast"])
    func[0](*sample_args)
    seconds = time.perf_counter() - t0
    how = "compiled"
    stats = getattr(func[0], "stats", None)
    if stats is not None and sum(stats.cache_hits.values()) > 0:
        how = "disk cache"
    if use_cache:
        _memory[k] = func
    return func, seconds, how


def _from_file(kernel: Kernel, k: str) -> Any:
    """The kernel imported from its module in the cache directory (written
    if missing), numba caching its code there; None if the directory cannot
    be written."""
    directory = cache_directory()
    path = os.path.join(directory, f"k_{k}.py")
    try:
        if not os.path.exists(path):
            os.makedirs(directory, mode=0o700, exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                f.write("CACHE = True\n" + kernel.source)
            os.replace(tmp, path)
        name = f"orochi_jit_k_{k}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module.kernel, module.kernel_fast
    except OSError:
        return None
