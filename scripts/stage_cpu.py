"""Run drtool's CLI in this process and write the CPU seconds of each of its threads, by thread
name, to the JSON file $DRTOOL_STAGE_CPU when it exits (scripts/bench --physical --stages).

    DRTOOL_STAGE_CPU=/tmp/cpu.json python scripts/stage_cpu.py --quiet backup --physical -p P

Python threads are timed with time.thread_time() at the end of their run() and summed by name
(a number at the end of the name is dropped: s3-part_0 and s3-part_1 are one stage). "native"
is the process's CPU that no Python thread accounts for: libzstd's worker threads. "children"
is pg_basebackup (and any other child process). $DRTOOL_SRC: run the drtool package of that
folder instead (another checkout).
"""

from __future__ import annotations

import atexit
import json
import os
import re
import resource
import runpy
import sys
import threading
import time

_CPU: dict[str, float] = {}
_LOCK = threading.Lock()
_run = threading.Thread.run


def _stage(name: str) -> str:
    return re.sub(r"[-_ ]?\d+( \(.*\))?$", "", name) or name


def _timed_run(self: threading.Thread) -> None:
    try:
        _run(self)
    finally:
        with _LOCK:
            _CPU[_stage(self.name)] = _CPU.get(_stage(self.name), 0.0) + time.thread_time()


def _write() -> None:
    main = time.thread_time()
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    with _LOCK:
        out = {"main": main, **_CPU}
        out["native"] = me.ru_utime + me.ru_stime - sum(out.values())
        out["children"] = kids.ru_utime + kids.ru_stime
    with open(os.environ["DRTOOL_STAGE_CPU"], "w") as f:
        json.dump({k: round(v, 3) for k, v in out.items()}, f)


_os_exit = os._exit


def _exit_after_writing(code: int) -> None:  # the CLI leaves by os._exit, past atexit
    _write()
    _os_exit(code)


threading.Thread.run = _timed_run  # type: ignore[method-assign]
os._exit = _exit_after_writing  # type: ignore[assignment]
atexit.register(_write)
if os.environ.get("DRTOOL_SRC"):  # another checkout's package (bench --compare-src)
    sys.path.insert(0, os.environ["DRTOOL_SRC"])
sys.argv = ["drtool", *sys.argv[1:]]
runpy.run_module("drtool", run_name="__main__")
