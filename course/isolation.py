"""A sandbox for a graded notebook, built from an allow-list: Linux namespaces, no root and no container.

Nothing of the host's file system is visible unless :func:`plan` lists it: the system's programs and
libraries (``/usr`` and the ``/bin``, ``/lib`` links or folders, a few files of ``/etc`` the dynamic linker
reads), the Python installation and the venv, the kit's ``helpers``, ``course``, ``sdserver`` and ``data``
(all read-only), the CLIP weights the checks need (``$HF_HOME/hub`` read-only, never the token beside it),
and the notebook's own temporary folder (writable). Everything else (homes, ``/srv``, ``/opt``, ``/mnt``,
``/run`` with its sockets, the kit's ``.env``, ``.git`` and ``outputs/``) does not exist in there. Besides:

* **network**: a namespace of its own with only loopback: no internet, no LAN, not the host's 127.0.0.1
  (the instructor's LLM, Jupyter, databases) and none of the host's abstract Unix sockets; the kit's
  preview server runs inside, on ``127.0.0.1:7860``;
* **processes**: a process namespace with its own ``/proc``: when the worker ends, the kernel and
  anything the student's code started end with it; a fresh ``/dev`` (null, zero, random, ...) and a
  fresh ``/tmp`` of limited size;
* **no capabilities**, ``no_new_privs``, and no way to undo a mount.

Two ways to build it from the same :func:`plan`:

* **bubblewrap** (``bwrap``, Debian's ``bubblewrap``: Flatpak's sandbox), when it is installed:
  :func:`prefix` gives its command line (:func:`bwrap_arguments`);
* otherwise the kit's own: ``unshare`` (util-linux) makes the namespaces and :func:`enter`, inside,
  mounts a new in-memory root, binds the allowed paths into it and changes root (``pivot_root``) to it.

What it cannot do: drop the grader's supplementary groups (only root can), so a file the sandbox can see
stays readable through them (the allow-list holds nothing private); it limits memory, CPU time, file size
and the number of processes through resource limits (course.grading_worker), not through cgroups.

:func:`available` tries the sandbox once per process (``unshare`` or ``bwrap`` may be missing, or user
namespaces forbidden: Ubuntu 24.04's AppArmor, containers; macOS and Windows have none) and says why not.

Example:
    >>> from course.isolation import available
    >>> available()          # '' when a notebook can be sandboxed, else why not   # doctest: +SKIP
    ''
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

INSIDE_PORT = 7860  # the preview server's port inside the namespace (A1111's usual one)
UNSHARE = ["--user", "--map-root-user", "--net", "--mount", "--pid", "--fork", "--mount-proc", "--kill-child"]
KIT_PARTS = ("helpers", "course", "sdserver", "data")  # what a graded notebook needs of the kit's folder
# The system's part of the allow-list: programs and libraries, and what the dynamic linker and Python read of /etc.
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives", "/etc/localtime")
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")

# <sys/mount.h>, <linux/prctl.h>, <linux/sockios.h>
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC, MS_PRIVATE = 1024, 2048, 4096, 16384, 1 << 18
MS_RELATIME = 1 << 21
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 24, 38
MNT_DETACH = 2
SYS_PIVOT_ROOT = {"x86_64": 155, "amd64": 155, "aarch64": 41, "arm64": 41}  # <asm/unistd.h>: no libc wrapper


def _bwrap() -> str | None:
    return shutil.which("bwrap", path="/usr/bin:/bin:/usr/local/bin")


def kind() -> str:
    """Which sandbox :func:`prefix` builds: "bubblewrap" where ``bwrap`` is installed, else "unshare" ("" neither)."""
    if _bwrap() and os.environ.get("KIT_SANDBOX", "") != "unshare":  # KIT_SANDBOX=unshare: the kit's own (tests)
        return "bubblewrap"
    return "unshare" if shutil.which("unshare", path="/usr/bin:/bin:/usr/sbin:/sbin") else ""


def prefix(plan_: dict | None = None) -> list[str]:
    """The command that puts a worker into its sandbox (``[]`` when there is none). With bubblewrap the plan is
    part of the command; with unshare the worker applies it itself (``--isolate PLAN``, :func:`enter`)."""
    if kind() == "bubblewrap":
        return [_bwrap(), *bwrap_arguments(plan_ or plan(Path(tempfile.gettempdir()))), "--"]
    if kind() == "unshare":
        return [shutil.which("unshare", path="/usr/bin:/bin:/usr/sbin:/sbin"), *UNSHARE, "--"]
    return []


def _existing(paths, as_given: bool = False) -> list[str]:
    """The paths that exist, resolved (and as given too: the venv's python is started by the path it was given)."""
    found = {os.path.realpath(p) for p in paths if p and os.path.exists(p)}
    found |= {os.path.abspath(p) for p in paths if as_given and p and os.path.exists(p)}
    return sorted(p for p in found if p != "/")  # never the whole file system


def plan(writable: Path, tmp_mb: int = 256) -> dict:
    """The allow-list, decided on the host: ``read_only`` paths, top-level ``links`` (``/bin -> usr/bin``), the
    ``writable`` folder, and the size of the fresh ``/tmp`` in MB.

    >>> p = plan(Path("/tmp/grade-x"))                                            # doctest: +SKIP
    >>> "/usr" in p["read_only"] and not any(x.startswith("/home") for x in p["read_only"])  # doctest: +SKIP
    True
    """
    from helpers.config import KIT_ROOT

    system, links = [], {}
    for path in (*SYSTEM, *ETC):
        if os.path.islink(path):  # merged /usr: /bin -> usr/bin; /etc/localtime -> /usr/share/zoneinfo/...
            links[path] = os.readlink(path)  # made as the same link inside (its target is visible there too)
        else:
            system.append(path)
    weights = [os.path.join(_hf_home(), "hub")]  # the downloaded models only, never HF_HOME/token
    if os.environ.get("CLIP_PRETRAINED") and os.path.isfile(os.environ["CLIP_PRETRAINED"]):
        weights.append(os.environ["CLIP_PRETRAINED"])  # a checkpoint file given by path (grading.clean_env)
    python = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
              os.path.dirname(os.path.dirname(os.path.realpath(sys.executable)))]
    kit = [str(KIT_ROOT / part) for part in KIT_PARTS]
    read_only = sorted(set(_existing(system) + _existing([*python, *weights, *kit], as_given=True)))
    # A path inside another one comes with it (binding it again inside a read-only folder would fail).
    read_only = [p for p in read_only if not any(p.startswith(q.rstrip("/") + "/") for q in read_only)]
    return {"read_only": read_only, "links": links, "writable": os.path.realpath(writable),
            "tmp_mb": tmp_mb}


def bwrap_arguments(plan_: dict) -> list[str]:
    """bubblewrap's options for ``plan_``: the same allow-list :func:`enter` builds with unshare."""
    arguments = ["--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
                 "--proc", "/proc", "--dev", "/dev", "--size", str(plan_["tmp_mb"] << 20), "--tmpfs", "/tmp"]
    for link, target in plan_["links"].items():
        arguments += ["--symlink", target, link]
    for path in plan_["read_only"]:  # sorted: a folder comes before what is inside it
        arguments += ["--ro-bind", path, path]
    return arguments + ["--bind", plan_["writable"], plan_["writable"], "--chdir", plan_["writable"]]


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


def _flags_of(path: str) -> int:
    """The flags a remount of ``path`` must keep (the kernel refuses to clear locked ones)."""
    f_flag = os.statvfs(path).f_flag
    pairs = [(os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC),
             (os.ST_NOATIME, MS_NOATIME), (os.ST_NODIRATIME, MS_NODIRATIME), (os.ST_RELATIME, MS_RELATIME)]
    return sum(ms for st, ms in pairs if f_flag & st)


def _bind(fd: int, target: str, is_dir: bool, read_only: bool) -> None:
    if is_dir:
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.exists(target):
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
    """Inside the namespaces unshare made: a new in-memory root holding only the allow-list (bound from the
    host), a fresh /proc, /dev and /tmp, ``pivot_root`` into it, then loopback up and every capability dropped.

    Raises OSError when a step fails: the caller must then not run the notebook.
    """
    writable = plan_["writable"]
    # Handles on what comes back, opened before anything is covered.
    wanted = [*plan_["read_only"], writable, *(f"/dev/{name}" for name in DEVICES)]
    handles = {path: os.open(path, os.O_PATH | os.O_CLOEXEC) for path in wanted if os.path.exists(path)}
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing done here reaches the host (unshare does it too)
    root = "/tmp"  # any folder will do as the mount point of the new root: the host's /tmp is not used after
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=755")
    for link, target in plan_["links"].items():
        os.makedirs(os.path.dirname(root + link), exist_ok=True)
        os.symlink(target, root + link)
    os.makedirs(root + "/tmp")
    _mount("tmpfs", root + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={int(plan_['tmp_mb'])}m,mode=1777")
    for path in sorted(handles):
        fd = handles[path]
        _bind(fd, root + path, os.path.isdir(f"/proc/self/fd/{fd}"),
              read_only=path != writable and not path.startswith("/dev/"))
        os.close(fd)
    os.makedirs(root + "/proc")
    _mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.makedirs(root + "/.old-root")
    _check(_libc().syscall(SYS_PIVOT_ROOT[platform.machine().lower()], root.encode(), (root + "/.old-root").encode()),
           "pivot_root")
    os.chdir("/")
    _check(_libc().umount2(b"/.old-root", MNT_DETACH), "umount the host's root")
    os.rmdir("/.old-root")
    _mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)  # the root itself: nothing to add there
    os.chdir(writable)
    _loopback_up()
    _drop_capabilities()


@functools.cache
def available() -> str:
    """'' when notebooks can run sandboxed here, else why not (tried once per process, ~0.2 s)."""
    if not sys.platform.startswith("linux"):
        return f"Linux namespaces are needed ({sys.platform} has none)"
    which = kind()
    if not which:
        return "neither bubblewrap (bwrap) nor unshare (util-linux) is installed"
    from helpers.config import KIT_ROOT

    with tempfile.TemporaryDirectory(prefix="grade-probe-") as tmp:
        plan_ = plan(Path(tmp))
        (Path(tmp) / "plan.json").write_text(json.dumps(plan_))
        command = [*prefix(plan_), sys.executable, "-m", "course.isolation", str(Path(tmp) / "plan.json")]
        try:
            done = subprocess.run(command + (["--enter"] if which == "unshare" else []), capture_output=True,
                                  text=True, timeout=60, cwd=tmp, stdin=subprocess.DEVNULL,
                                  env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONPATH": str(KIT_ROOT)})
        except subprocess.TimeoutExpired:
            return "trying the sandbox took over 60 s"
    if done.returncode == 0 and done.stdout.strip() == "isolated":
        return ""
    lines = (done.stderr.strip() or done.stdout.strip() or f"exit status {done.returncode}").splitlines()
    said = [line for line in lines if "unshare:" in line or "bwrap:" in line or line.startswith("setting up")]
    return f"{which} failed: {(said or lines)[-1]}"


def _self_test(plan_file: str, enter_here: bool) -> int:
    """What :func:`available` runs inside the sandbox: set it up (unshare) and check that it took."""
    import socket

    try:
        if enter_here:
            enter(json.loads(Path(plan_file).read_text()))
        with socket.socket() as sock:  # loopback works
            sock.bind(("127.0.0.1", INSIDE_PORT))
        if os.path.exists("/etc/passwd"):
            raise OSError("a file outside the allow-list (/etc/passwd) is visible")
        if _libc().mount(None, b"/", None, ctypes.c_ulong(MS_BIND | MS_REMOUNT), None) == 0:
            raise OSError("a mount could still be changed after the capabilities were dropped")
    except OSError as err:
        print(f"setting up the sandbox failed: {err}", file=sys.stderr)
        return 1
    print("isolated")
    return 0


if __name__ == "__main__":
    sys.exit(_self_test(sys.argv[1], "--enter" in sys.argv[2:]))
