"""Run every benchmark in bench/ (each bench/*_bench.py, in name order).

Each runs in its own Python process, with this interpreter; its table goes to
stdout and its results file to bench/results/.  Names given on the command
line pick benchmarks (``python bench/run_all.py bridge``).  The exit status is
non-zero if any benchmark failed.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv: list[str]) -> int:
    scripts = sorted(glob.glob(os.path.join(HERE, "*_bench.py")))
    if argv:
        wanted = {a.removesuffix(".py").removesuffix("_bench") for a in argv}
        scripts = [s for s in scripts if os.path.basename(s)[: -len("_bench.py")] in wanted]
        if not scripts:
            print(f"no benchmark named {', '.join(sorted(wanted))} in bench/", file=sys.stderr)
            return 2
    failed = []
    for script in scripts:
        name = os.path.basename(script)
        print(f"=== {name}", flush=True)
        start = time.perf_counter()
        rc = subprocess.call([sys.executable, script], cwd=os.path.dirname(HERE))
        print(f"=== {name}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} in {time.perf_counter() - start:.0f} s\n",
              flush=True)
        if rc != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
