"""Network and file isolation for a graded notebook: Linux namespaces, no root and no container needed.

:mod:`course.grading` starts each worker as ``unshare --user --map-root-user --net --mount --pid --fork
--mount-proc --kill-child -- python -m course.grading_worker ... --isolate PLAN`` (util-linux), so the
worker, the kernel it starts and everything the student's code starts live in new namespaces:

* **network**: a namespace of its own with only loopback (brought up by :func:`enter`): no internet, no
  LAN, and not the host's 127.0.0.1 either (the instructor's LLM, Jupyter, databases). The kit's preview
  server runs inside the same namespace, started by the worker on ``127.0.0.1:7860`` (a fresh namespace has
  every port free);
* **files** (:func:`plan` on the host, :func:`enter` inside): every mount is made read-only, so the code
  can change nothing outside its temporary folder (not the kit, not the venv: the next student's grade
  cannot be tampered with); empty in-memory folders hide the homes (``/home``, ``/root``, ``$HOME``),
  ``/tmp``, ``/var/tmp``, ``/dev/shm``, ``/run/user`` (agent sockets), ``/mnt``, ``/media`` and the kit's
  folder (its ``.env``, ``outputs/``, ``.git``); then only what the run needs is bound back, read-only:
  the Python installation, the Hugging Face cache (CLIP weights, offline), the kit's ``helpers``,
  ``course``, ``sdserver`` and ``data``; and the notebook's temporary folder, writable;
* **processes**: a process namespace with its own ``/proc``, so ``/proc/<pid>/root`` of the instructor's
  other processes (a way around the hidden folders) does not exist; when the worker ends, the kernel and
  anything it started end with it.

Then the worker drops every capability (the bounding set too, and ``no_new_privs``): it runs as "root"
only inside its user namespace, and without capabilities the student's code cannot undo the mounts (and
mounts copied into any namespace it creates itself are locked by the kernel).

:func:`available` tries all of it once per process (``unshare`` may be missing, or forbidden: Ubuntu
24.04's AppArmor, containers without user namespaces, macOS, Windows) and says why not.

Example:
    >>> from course.isolation import available
    >>> available()          # '' when a notebook can be isolated, else why not   # doctest: +SKIP
    ''
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

INSIDE_PORT = 7860  # the preview server's port inside the namespace (A1111's usual one)
UNSHARE = ["--user", "--map-root-user", "--net", "--mount", "--pid", "--fork", "--mount-proc", "--kill-child"]
KIT_PARTS = ("helpers", "course", "sdserver", "data")  # what a graded notebook needs of the kit's folder

# <sys/mount.h>, <linux/prctl.h>, <linux/sockios.h>
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC, MS_PRIVATE = 1024, 2048, 4096, 16384, 1 << 18
MS_RELATIME, MS_STRICTATIME = 1 << 21, 1 << 24
PER_MOUNT = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
             "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME, "strictatime": MS_STRICTATIME}
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 24, 38


def prefix() -> list[str]:
    """The command that puts a worker into its namespaces (``[]`` without ``unshare``)."""
    found = shutil.which("unshare", path="/usr/bin:/bin:/usr/sbin:/sbin")
    return [found, *UNSHARE, "--"] if found else []


def plan(writable: Path) -> dict:
    """What to hide and what to bind back, decided on the host (the worker's HOME is already the temporary one).

    >>> p = plan(Path("/tmp/grade-x"))                                            # doctest: +SKIP
    >>> "/tmp" in p["hide"] and p["writable"] == "/tmp/grade-x"                   # doctest: +SKIP
    True
    """
    from helpers.config import KIT_ROOT

    def real(paths, as_given: bool = False) -> list[str]:
        found = {os.path.realpath(p) for p in paths if p and os.path.exists(p)}
        # What comes back comes back under its given path too: a home that is a symbolic link is hidden
        # with its folder, and the venv's python is started by the path it was given.
        found |= {os.path.abspath(p) for p in paths if as_given and p and os.path.exists(p)}
        return sorted(p for p in found if p != "/")  # never hide (or re-bind) the whole file system

    hide = real(["/home", "/root", str(Path.home()), "/tmp", "/var/tmp", "/dev/shm", "/run/user", "/mnt",
                 "/media", tempfile.gettempdir(), str(KIT_ROOT)])
    keep = real([sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                 os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))), _hf_home(),
                 *(str(KIT_ROOT / part) for part in KIT_PARTS)], as_given=True)
    return {"hide": hide, "keep": keep, "writable": os.path.realpath(writable)}


def _hf_home() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HOME)
    except ImportError:
        return str(Path.home() / ".cache" / "huggingface")


# --- Inside the namespaces -----------------------------------------------------------------------------

@functools.cache
def _libc():
    return ctypes.CDLL(None, use_errno=True)  # only ever called on Linux (CDLL(None) fails on Windows)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    encode = lambda text: text.encode() if text is not None else None  # noqa: E731
    _check(_libc().mount(encode(source), encode(target), encode(fstype), ctypes.c_ulong(flags), encode(data)),
           f"mount {target}")


def _mounts() -> list[tuple[str, int]]:
    """(mount point, its per-mount flags) for every mount, from /proc/self/mountinfo."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        point = fields[4].encode().decode("unicode_escape")  # "\040" for a space
        flags = sum(PER_MOUNT.get(option, 0) for option in fields[5].split(","))
        found.append((point, flags))
    return found


def _flags_of(path: str) -> int:
    """The flags a remount of ``path`` must keep (the kernel refuses to clear locked ones)."""
    f_flag = os.statvfs(path).f_flag
    pairs = [(os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC),
             (os.ST_NOATIME, MS_NOATIME), (os.ST_NODIRATIME, MS_NODIRATIME), (os.ST_RELATIME, MS_RELATIME)]
    return sum(ms for st, ms in pairs if f_flag & st)


def _inside(path: str, folders: list[str]) -> bool:
    return any(path == f or path.startswith(f.rstrip("/") + "/") for f in folders)


def _bind(fd: int, target: str, is_dir: bool, read_only: bool) -> None:
    if is_dir:
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        Path(target).touch()
    _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
    _mount(None, target, None, MS_BIND | MS_REMOUNT | (MS_RDONLY if read_only else 0) | _flags_of(target))


def _loopback_up() -> None:
    import fcntl
    import socket
    import struct

    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        flags = struct.unpack("16sh", fcntl.ioctl(sock, siocgifflags, struct.pack("16sh", b"lo", 0)))[1]
        fcntl.ioctl(sock, siocsifflags, struct.pack("16sh", b"lo", flags | iff_up))


def _drop_capabilities() -> None:
    """No capability left, none regained by running a program (this process is uid 0 in its namespace)."""
    for cap in range(64):
        if _libc().prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            break  # EINVAL: past the last capability this kernel knows
    _check(_libc().prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(no_new_privs)")

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    empty = (Data * 2)()
    _check(_libc().capset(ctypes.byref(Header(0x20080522, 0)), empty), "capset")


def enter(plan_: dict) -> None:
    """Inside fresh namespaces (see the module doc): hide, bind back, make read-only, loopback up, drop capabilities.

    Raises OSError when a step fails: the caller must then not run the notebook.
    """
    hide, keep, writable = plan_["hide"], plan_["keep"], plan_["writable"]
    # Handles on what comes back, opened before the folders holding them are covered.
    handles = {path: os.open(path, os.O_PATH | os.O_CLOEXEC) for path in [*keep, writable] if os.path.exists(path)}
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing done here reaches the host (unshare does it too)
    for point, flags in _mounts():
        if point == "/proc" or point.startswith("/proc/"):
            continue  # this namespace's own /proc (process ids only)
        try:
            _mount(None, point, None, MS_BIND | MS_REMOUNT | MS_RDONLY | flags)
        except OSError:
            if not os.path.isdir(point):
                continue  # a mount point that a later mount covers: nothing to reach there
            _mount(None, point, None, MS_BIND | MS_REMOUNT | MS_RDONLY | _flags_of(point))
    for folder in hide:
        if os.path.isdir(folder) and not os.path.islink(folder):
            _mount("tmpfs", folder, "tmpfs", MS_NOSUID | MS_NODEV, "size=64m,mode=755")
    for path in sorted(p for p in keep if p in handles and _inside(p, hide)):
        _bind(handles[path], path, os.path.isdir(f"/proc/self/fd/{handles[path]}"), read_only=True)
    _bind(handles[writable], writable, True, read_only=False)
    for fd in handles.values():
        os.close(fd)
    os.chdir(writable)  # the old working folder is the covered one, now read-only
    _loopback_up()
    _drop_capabilities()


@functools.cache
def available() -> str:
    """'' when notebooks can run isolated here, else why not (tried once per process, ~0.2 s)."""
    if not sys.platform.startswith("linux"):
        return f"Linux namespaces are needed ({sys.platform} has none)"
    command = prefix()
    if not command:
        return "the unshare command (util-linux) is not installed"
    from helpers.config import KIT_ROOT

    with tempfile.TemporaryDirectory(prefix="grade-probe-") as tmp:
        (Path(tmp) / "plan.json").write_text(json.dumps(plan(Path(tmp))))
        try:
            done = subprocess.run([*command, sys.executable, "-m", "course.isolation", str(Path(tmp) / "plan.json")],
                                  capture_output=True, text=True, timeout=60, cwd=tmp, stdin=subprocess.DEVNULL,
                                  env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONPATH": str(KIT_ROOT)})
        except subprocess.TimeoutExpired:
            return "trying the namespaces took over 60 s"
    if done.returncode == 0 and done.stdout.strip() == "isolated":
        return ""
    lines = (done.stderr.strip() or done.stdout.strip() or f"exit status {done.returncode}").splitlines()
    said = [line for line in lines if "unshare:" in line or line.startswith("setting up")]  # not "Try --help"
    return f"unshare failed: {(said or lines)[-1]}"


def _self_test(plan_file: str) -> int:
    """What :func:`available` runs inside the namespaces: set everything up, then check it took."""
    import socket

    try:
        enter(json.loads(Path(plan_file).read_text()))
        with socket.socket() as sock:  # loopback works
            sock.bind(("127.0.0.1", INSIDE_PORT))
        if _libc().mount(None, b"/", None, ctypes.c_ulong(MS_BIND | MS_REMOUNT), None) == 0:
            raise OSError("a mount could still be changed after the capabilities were dropped")
    except OSError as err:
        print(f"setting up the isolation failed: {err}", file=sys.stderr)
        return 1
    print("isolated")
    return 0


if __name__ == "__main__":
    sys.exit(_self_test(sys.argv[1]))
