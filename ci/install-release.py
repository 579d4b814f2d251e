#!/usr/bin/env python3
"""Install the orochi Python package as a new *release*, switched to atomically.

Backends that are running keep the code they started with; `make install` may
run while the server does.

Layout under the prefix (``$OROCHI_PREFIX``, default /opt/orochi)::

    venv/                    the interpreter and third-party packages (make venv)
    venv/.../site-packages/orochi_release.py, orochi-release.pth
                             run by every interpreter of the venv at start
    releases/<id>/           one installed copy of the package (orochi_fdw, its
                             compiled kernels, bin/orochi-sidecar), never changed
                             once published; <id> = sequence number, UTC time,
                             git commit; <id>/RELEASE names it
    releases/current         symlink to the release new processes use

At start, an interpreter of the venv (a backend's embedded Python, the
postmaster's with preloading, pytest, the sidecar) resolves ``current`` once,
puts that directory on sys.path and keeps its RELEASE file open for its whole
life. Installing writes a new directory and renames a new symlink over
``current`` (atomic): running processes keep importing from their own release,
lazily imported modules included, and new ones take the new release. A release
no process holds open is removed by a later install (never the current one or
the one before it). The C bridge (orochi.so) is replaced by ``install``, which
unlinks the old file: running backends keep the copy they mapped. A preloading
server keeps its release (and its orochi.so) until it restarts.

Usage: install-release.py [--prefix P] [--source DIR]   (stage, publish, prune)
Stdlib only: it runs before the package is installed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

PIN_MODULE = '''"""Pins this process to one installed release of orochi (written by
ci/install-release.py; run at interpreter start by orochi-release.pth).

Resolves {releases}/current once, puts that directory on sys.path just before
this site-packages, and keeps its RELEASE file open: a later install, which
switches `current` to a new directory, changes nothing for this process, and
the directory is not removed while the process lives.
"""

import os
import sys

RELEASES = {releases!r}


def _pin():
    try:
        path = os.path.realpath(os.path.join(RELEASES, "current"))
        fd = os.open(os.path.join(path, "RELEASE"), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None, None
    if path not in sys.path:
        here = os.path.dirname(os.path.abspath(__file__))
        index = sys.path.index(here) if here in sys.path else len(sys.path)
        sys.path.insert(index, path)
    return path, fd


path, _fd = _pin()
'''

PTH_LINE = "import orochi_release\n"

# -P: "-m" would put the working directory first on sys.path, and a checkout
# of the sources there (no compiled kernels) would shadow the release
SIDECAR_SCRIPT = """#!/bin/sh
# orochi-sidecar of the current release (written by ci/install-release.py)
exec "{python}" -P -m orochi_fdw.sidecar "$@"
"""


def site_packages(venv: str) -> str:
    out = subprocess.run([os.path.join(venv, "bin", "python"), "-c",
                          "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip()


def ensure_hooks(venv: str, releases: str) -> None:
    """The venv's start-up hook pinning every interpreter to a release, and
    an orochi-sidecar command that runs the current one."""
    site = site_packages(venv)
    _write(os.path.join(site, "orochi_release.py"), PIN_MODULE.format(releases=releases))
    _write(os.path.join(site, "orochi-release.pth"), PTH_LINE)
    script = os.path.join(venv, "bin", "orochi-sidecar")
    _write(script, SIDECAR_SCRIPT.format(python=os.path.join(venv, "bin", "python")))
    os.chmod(script, 0o755)


def _write(path: str, text: str) -> None:
    """Write a file by renaming a complete temporary one over it."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def legacy_install(venv: str) -> str | None:
    """An orochi installed into the venv itself (the layout before releases),
    if there is one. It is left alone: a backend started before the first
    release may still import from it, and the release comes first on
    sys.path for everything started since."""
    path = os.path.join(site_packages(venv), "orochi_fdw")
    return path if os.path.isdir(path) else None


def stage(venv: str, source: str, releases: str) -> str:
    """pip-install the package at ``source`` into a new directory under
    ``releases`` (not yet published); returns it."""
    os.makedirs(releases, exist_ok=True)
    staged = tempfile.mkdtemp(prefix=".staging-", dir=releases)
    subprocess.run([os.path.join(venv, "bin", "python"), "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", "--upgrade", "--target", staged, source], check=True)
    return staged


def publish(staged: str, releases: str, label: str = "") -> str:
    """Make a staged directory the release new processes use: give it its
    final name and a RELEASE file, make it world-readable, then rename a new
    ``current`` symlink over the old one. Returns the release's id."""
    seqs = [int(d.split("-", 1)[0]) for d in os.listdir(releases) if d.split("-", 1)[0].isdigit()]
    rid = f"{max(seqs, default=0) + 1:06d}-" + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + \
        (f"-{label}" if label else "")
    with open(os.path.join(staged, "RELEASE"), "w") as f:
        f.write(rid + "\n")
    for root, dirs, files in os.walk(staged):
        os.chmod(root, 0o755)
        for name in files:
            p = os.path.join(root, name)
            if not os.path.islink(p):
                os.chmod(p, os.stat(p).st_mode | 0o444)
    final = os.path.join(releases, rid)
    os.rename(staged, final)
    link = os.path.join(releases, f".current-{os.getpid()}")
    os.symlink(rid, link)
    os.replace(link, os.path.join(releases, "current"))
    return rid


def releases_in_use(releases: str) -> set[str] | None:
    """Releases some process holds open (its RELEASE file, or a mapped
    kernel), from /proc; None if that cannot be known: a process whose fds
    cannot be read and which may be a Python or a PostgreSQL server (other
    processes, e.g. a container's init, cannot hold a release)."""
    root = os.path.realpath(releases) + os.sep
    used: set[str] = set()
    complete = True
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        paths = []
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    paths.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
                except OSError:
                    pass
            with open(f"/proc/{pid}/maps") as f:
                paths += [line.split(None, 5)[5].strip() for line in f if len(line.split(None, 5)) == 6]
        except FileNotFoundError:
            continue  # the process ended
        except PermissionError:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmdline = f.read()
            except OSError:
                cmdline = b"python"
            if b"python" in cmdline or b"postgres" in cmdline:
                complete = False
            continue
        for p in paths:
            if p.startswith(root):
                used.add(p[len(root):].split(os.sep, 1)[0])
    return used if complete else None


def prune(releases: str) -> list[str]:
    """Remove the releases that no process holds, except the current one and
    the one published before it (a process may be starting with it right
    now). Removes nothing if /proc cannot be read for every process. Returns
    the ids removed."""
    if not os.path.isdir(releases):
        return []
    current = os.path.basename(os.path.realpath(os.path.join(releases, "current")))
    ids = sorted(d for d in os.listdir(releases)
                 if not d.startswith(".") and d != "current" and os.path.isdir(os.path.join(releases, d)))
    keep = {current}
    if current in ids and ids.index(current) > 0:
        keep.add(ids[ids.index(current) - 1])
    in_use = releases_in_use(releases)
    if in_use is None:
        return []
    removed = []
    for rid in ids:
        if rid in keep or rid in in_use:
            continue
        shutil.rmtree(os.path.join(releases, rid), ignore_errors=True)
        removed.append(rid)
    for d in os.listdir(releases):  # staging left by an interrupted install
        if d.startswith(".staging-"):
            path = os.path.join(releases, d)
            if time.time() - os.stat(path).st_mtime > 3600:
                shutil.rmtree(path, ignore_errors=True)
    return removed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefix", default=os.environ.get("OROCHI_PREFIX", "/opt/orochi"))
    parser.add_argument("--source", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    args = parser.parse_args(argv)
    venv = os.path.join(args.prefix, "venv")
    releases = os.path.join(args.prefix, "releases")
    label = ""
    git = subprocess.run(["git", "-C", args.source, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if git.returncode == 0:
        label = git.stdout.strip()
    staged = stage(venv, os.path.abspath(args.source), releases)
    rid = publish(staged, releases, label)
    ensure_hooks(venv, releases)
    removed = prune(releases)
    print(f"install-release: {rid} is current" + (f"; removed {', '.join(removed)}" if removed else ""))
    legacy = legacy_install(venv)
    if legacy:
        print(f"install-release: an older copy in {legacy} is shadowed by the release; remove it "
              "(pip uninstall orochi with that venv's pip) once no server started before uses it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
