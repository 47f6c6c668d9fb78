"""Run a benchmark module as the suite's child process and report its peak memory.

``python -m benchmarks._child MODULE [ARGS ...]`` runs ``python -m MODULE ARGS ...`` in this process (``runpy``,
as ``-m`` does) and, when the process exits (normally, by ``SystemExit`` or by an exception), writes
``PEAK_MARK<KiB>`` as its last stderr line: the peak resident set of the process and of any child it waited
for (``getrusage(...).ru_maxrss``; interpreter, imports and the module's whole run).
``python -m benchmarks._child --baseline`` only imports torch and symclone: the suite subtracts that peak
(measured in the same run) so that a module's ``peak_mb`` is what it needs beyond a bare interpreter.
"""
from __future__ import annotations

import atexit
import runpy
import sys

from benchmarks._util import PEAK_MARK, process_peak_bytes


def _report() -> None:
    sys.stdout.flush()
    sys.stderr.write(f"\n{PEAK_MARK}{process_peak_bytes() // 1024}\n")
    sys.stderr.flush()


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit("usage: python -m benchmarks._child MODULE [ARGS ...] | --baseline")
    atexit.register(_report)
    if argv[0] == "--baseline":
        import symclone  # noqa: F401  (torch is imported by benchmarks._util)
        return
    sys.argv = argv
    runpy.run_module(argv[0], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
