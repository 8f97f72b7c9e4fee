"""Where and in which precision the diffusers engine runs.

* device "auto": CUDA if PyTorch sees a GPU, then Apple's MPS, then the CPU;
* dtype "auto": float16 on a GPU; on a CPU bfloat16 only where the CPU computes it natively
  (AVX512-BF16 or AMX on x86), because emulated bfloat16 is far slower than float32.

    >>> pick_dtype("float32", "cpu")
    torch.float32
"""

from __future__ import annotations

import platform
import time

from .base import EngineUnavailable

DTYPES = ("auto", "float32", "bfloat16", "float16")


def pick_device(requested: str = "auto") -> str:
    """"auto": cuda if there is a GPU, then mps (Apple), then cpu (the kit's one choice, also CLIP's:
    helpers.clipqa.pick_device); anything else is used as given, once PyTorch says it is there."""
    import torch

    from helpers.clipqa import pick_device as auto_device

    if requested == "auto":
        return auto_device("auto")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise EngineUnavailable(f"--device {requested}: PyTorch sees no CUDA GPU here.",
                                fix="use --device auto or --device cpu (or install a CUDA build of PyTorch)")
    if requested == "mps" and not torch.backends.mps.is_available():
        raise EngineUnavailable("--device mps: Apple's MPS is not available here.", fix="use --device cpu")
    return requested


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively. Without it PyTorch emulates bf16, which is
    much slower than float32 (measured: 60x for a matrix product on an AVX2-only CPU)."""
    import torch

    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64", "i386", "i686"):
        checks = [getattr(torch.cpu, "_is_avx512_bf16_supported", None),
                  getattr(torch.cpu, "_is_amx_tile_supported", None)]
        return any(check is not None and check() for check in checks)
    # Other CPUs (e.g. ARM with BF16 instructions): time a small product in both precisions.
    try:
        a32 = torch.randn(256, 256)
        a16 = a32.to(torch.bfloat16)

        def best(tensor) -> float:
            times = []
            for _ in range(3):
                started = time.perf_counter()
                tensor @ tensor
                times.append(time.perf_counter() - started)
            return min(times)

        return best(a16) <= best(a32)
    except RuntimeError:
        return False


def pick_dtype(requested: str, device: str):
    """The torch dtype for ``--dtype`` (see the module docstring for "auto")."""
    import torch

    if requested not in DTYPES:
        raise EngineUnavailable(f"--dtype {requested}: unknown.", fix=f"use one of {', '.join(DTYPES)}")
    if requested != "auto":
        return getattr(torch, requested)
    if device.startswith(("cuda", "mps")):
        return torch.float16
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


def cuda_memory(device: str) -> dict:
    """GET /sdapi/v1/memory's "cuda" part, in A1111's shape (bytes), for a CUDA device; for any other
    device A1111's ``{"error": ...}``.

    >>> cuda_memory("cpu")
    {'error': 'unavailable (the model runs on cpu, not on a CUDA GPU)'}
    """
    if not str(device).startswith("cuda"):
        return {"error": f"unavailable (the model runs on {device}, not on a CUDA GPU)"}
    import torch

    try:
        free, total = torch.cuda.mem_get_info(device)
        stats = torch.cuda.memory_stats(device)
    except Exception as error:  # a driver problem must not break /memory
        return {"error": f"{type(error).__name__}: {error}"}

    def pair(name: str) -> dict:
        return {"current": stats.get(f"{name}.all.current", 0), "peak": stats.get(f"{name}.all.peak", 0)}

    return {"system": {"free": free, "used": total - free, "total": total},
            "active": pair("active_bytes"), "allocated": pair("allocated_bytes"),
            "reserved": pair("reserved_bytes"), "inactive": pair("inactive_split_bytes"),
            "events": {"retries": stats.get("num_alloc_retries", 0), "oom": stats.get("num_ooms", 0)}}
