"""Run one student notebook under limits: ``python -m course.grading_worker IN.ipynb OUT.ipynb [options]``.

:mod:`course.grading` starts this in its own process, with a clean environment, a temporary HOME and working
folder, and kills its process group (and the kernel's) when the notebook's time is up. Here, before any
student code runs, the process sets its resource limits, which the kernel it starts inherits:

* ``RLIMIT_AS``: address space (``--memory-mb``); a notebook that allocates more gets a MemoryError or dies;
* ``RLIMIT_FSIZE``: the largest file it may write (``--file-mb``), so one notebook cannot fill the disk
  with one file;
* ``RLIMIT_CPU``: CPU seconds (``--cpu-s``), a backstop behind the wall-clock limits;
* ``RLIMIT_NPROC``: processes (``--processes``), against a fork bomb;
* ``RLIMIT_CORE``: no core dumps.

It also adopts every process the notebook starts (Linux's child subreaper), and kills all of them, detached
ones too, before it writes the result: nothing a student started outlives the notebook or touches its result.

With ``--isolate PLAN`` (see :mod:`course.isolation`; the worker then runs inside new namespaces) it first
hides the instructor's files, cuts the network down to loopback and drops its capabilities, and with
``--serve-preview PORT`` it starts the kit's preview server on that port of the namespace's loopback (the
host's is out of reach), while the kernel starts.

Then nbclient runs every cell (``allow_errors``: a failing cell does not stop the later checks) with a
per-cell timeout, and the executed notebook is written to OUT, also when a cell timed out or the kernel
died: OUT's metadata ``grading.stopped`` says why it stopped early, and ``grading.cells`` records, per cell
index, how the cell ran as the kernel answered the execute request (``status`` "ok" or "error", ``ename``,
``evalue``; "running" for the cell that was stopped; no entry for a cell never run). This process writes
that record from nbclient's replies, not from anything the cell printed: :mod:`course.grading` reads each
check's result from it (:mod:`course.autograde`).

With ``--sign`` it reads a key from stdin first and prints ``signed: <HMAC-SHA256 of OUT>`` last, so the grader
trusts OUT only as this process wrote it (not a file the student's code put there).

Exit status: 0 ran to the end, 3 a cell timed out, 4 the kernel died, 5 another error, 6 the isolation
could not be set up (nothing ran), 7 stopped by the grader (SIGTERM: its time was up).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def set_limits(memory_mb: int, file_mb: int, cpu_s: int, processes: int = 0) -> None:
    """Lower this process's limits (children inherit them); a limit already lower stays."""
    def lower(kind: int, value: int) -> None:
        soft, hard = resource.getrlimit(kind)
        new = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(kind, (new, new if hard == resource.RLIM_INFINITY else hard))

    if memory_mb > 0:
        lower(resource.RLIMIT_AS, memory_mb * 1024 * 1024)
    if file_mb > 0:
        lower(resource.RLIMIT_FSIZE, file_mb * 1024 * 1024)
    if cpu_s > 0:
        lower(resource.RLIMIT_CPU, cpu_s)
    if processes > 0:  # a fork bomb stops here (counted per user, so the grader passes its own count + a margin)
        lower(resource.RLIMIT_NPROC, processes)
    lower(resource.RLIMIT_CORE, 0)


PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>


def adopt_orphans() -> None:
    """Linux: make this process the "subreaper" of everything it starts, so a student's process that detaches
    (double fork, setsid) is adopted here instead of by init, and :func:`end_descendants` still finds it."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def descendants(root: int) -> list[int]:
    """Every living process below ``root`` (children, theirs, ...), read from /proc (Linux; elsewhere [])."""
    parents = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # it ended meanwhile
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (name) ": state, ppid, ...
        if fields[0] != "Z":
            parents[int(entry.name)] = int(fields[1])
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def end_descendants() -> None:
    """Kill every process below this one until none is left: what the student's code started may not outlive its
    notebook, nor change the result written after it."""
    for _ in range(100):
        left = descendants(os.getpid())
        if not left:
            return
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:  # reap them here (adopted orphans are our children now)
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            pass
        time.sleep(0.02)


OUTPUT_CAP = 256_000  # characters of output kept per cell: what the grader reads of a notebook stays small


def capped_client(base):
    """nbclient's NotebookClient keeping at most OUTPUT_CAP characters of each cell's output (then one line saying
    so): a notebook that prints a gigabyte costs the worker and the grader no memory, and its checks still count.
    ``cut`` lists the cells it cut."""

    class CappedClient(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.cut, self._sizes = [], {}  # the cells cut; characters of output seen per cell

        def output(self, outs, msg, display_id, cell_index):
            content = msg.get("content", {})
            size = len(content.get("text", "")) + sum(len(str(v)) for v in (content.get("data") or {}).values())
            size += sum(len(line) for line in content.get("traceback", []) or [])
            used = self._sizes.get(cell_index, 0)
            self._sizes[cell_index] = used + size
            if used + size <= OUTPUT_CAP:
                return super().output(outs, msg, display_id, cell_index)
            if cell_index not in self.cut:
                import nbformat

                self.cut.append(cell_index)
                note = f"[the grader kept this cell's first {OUTPUT_CAP // 1000} KB of output]\n"
                outs.append(nbformat.v4.new_output("stream", name="stderr", text=note))
            return None

    return CappedClient


def _start_preview(port: int) -> subprocess.Popen:
    """The kit's preview server on 127.0.0.1:port, in a process of its own: it starts (fastapi's imports, 1-3 s)
    on another core while this process starts the kernel, and it ends with this namespace."""
    return subprocess.Popen([sys.executable, "-m", "sdserver", "--engine", "preview", "--host", "127.0.0.1",
                             "--port", str(port)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


def _wait_for(server: subprocess.Popen, port: int, timeout: float = 60.0) -> None:
    """Until the server accepts connections (uvicorn listens once the app is loaded), it ended, or timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course.grading_worker")
    parser.add_argument("notebook")
    parser.add_argument("out")
    parser.add_argument("--cell-timeout", type=int, default=60)
    parser.add_argument("--memory-mb", type=int, default=4096)
    parser.add_argument("--file-mb", type=int, default=200)
    parser.add_argument("--cpu-s", type=int, default=0)
    parser.add_argument("--pid-file", default=None, help="where to write the kernel's process id")
    parser.add_argument("--isolate", default=None, help="a plan from course.isolation.plan (JSON file)")
    parser.add_argument("--serve-preview", type=int, default=0, help="start the preview server on this port")
    parser.add_argument("--processes", type=int, default=0, help="at most this many processes of this user")
    parser.add_argument("--sign", action="store_true",
                        help="read a key from stdin (before any student code runs) and print OUT's HMAC with it")
    args = parser.parse_args(argv)
    # The key arrives on stdin and is read to its end here, before the kernel starts: the student's code never
    # sees it, so a file it writes in OUT's place (and ends this process to keep) does not carry a valid HMAC.
    key = sys.stdin.buffer.read() if args.sign else b""

    if args.isolate:
        from course.isolation import enter

        try:
            enter(json.loads(Path(args.isolate).read_text()))
        except OSError as err:
            print(f"isolation failed: {err}")
            return 6
    set_limits(args.memory_mb, args.file_mb, args.cpu_s, args.processes)
    adopt_orphans()
    # The grader's "time is up" (SIGTERM): end everything the notebook started before this process goes.
    signal.signal(signal.SIGTERM, lambda *_: (end_descendants(), os._exit(7)))
    server = _start_preview(args.serve_preview) if args.serve_preview else None

    # jsonschema (through nbformat) builds rfc3987_syntax's grammar at import: 2-3 s per notebook, for an
    # "iri" format no notebook schema uses. jsonschema skips that format when the import fails.
    sys.modules.setdefault("rfc3987_syntax", None)
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    nb = nbformat.read(args.notebook, as_version=4)
    pid_file = Path(args.pid_file) if args.pid_file else None

    def note_kernel(**_kwargs) -> None:
        if server is not None:
            _wait_for(server, args.serve_preview)  # started alongside the kernel; the first cell may call it
        if pid_file is not None:
            pid = getattr(getattr(client.km, "provisioner", None), "pid", None)
            if pid:
                pid_file.write_text(str(pid))

    record: dict[str, dict] = {}

    def started(cell_index: int, **_kwargs) -> None:
        record[str(cell_index)] = {"status": "running"}

    def executed(cell_index: int, execute_reply: dict | None = None, **_kwargs) -> None:
        content = (execute_reply or {}).get("content", {})
        record[str(cell_index)] = {"status": str(content.get("status", "error")),
                                   "ename": str(content.get("ename", ""))[:200],
                                   "evalue": str(content.get("evalue", ""))[:2000]}

    # kernel_name python3: the kernel of this same Python (the kit's venv), whatever the notebook names.
    client = capped_client(NotebookClient)(nb, timeout=args.cell_timeout, kernel_name="python3", allow_errors=True,
                            interrupt_on_timeout=False, resources={"metadata": {"path": "."}},
                            on_notebook_start=note_kernel, on_cell_execute=started,
                            on_cell_executed=executed, record_timing=False)
    stopped, status = "", 0
    try:
        client.execute()
    except CellTimeoutError:
        stopped, status = f"a cell ran longer than {args.cell_timeout} s and was stopped", 3
    except DeadKernelError:
        stopped, status = "the kernel died (out of memory, or the code ended the process)", 4
    except Exception as err:  # noqa: BLE001 - report anything else as the reason, never a traceback of ours
        stopped, status = f"the notebook could not be run ({type(err).__name__})", 5
    # Nothing the notebook started is left running when its result is written (a process that waited for this
    # moment could otherwise rewrite it), nor after: the preview server, the kernel, and any orphan adopted here.
    end_descendants()
    if server is not None:
        server.wait()
    nb.metadata["grading"] = {"stopped": stopped, "cells": record, "cut": client.cut, "cut_at": OUTPUT_CAP}
    nbformat.write(nb, args.out)
    if args.sign:
        import hashlib
        import hmac

        print("signed: " + hmac.new(key, Path(args.out).read_bytes(), hashlib.sha256).hexdigest(), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
