"""OpenVINO (float32 and int8 weights) against PyTorch float32 for the diffusers engine, on this CPU.

The model is bench_diffusers' SD-Turbo-shaped one (random weights, 1.3 B parameters; timing does not depend
on the weight values), saved once, converted once per weight format, then served by the kit's engine
(``get_engine("diffusers", backend=...)``): one 512x512 image, guidance 0 (SD-Turbo's), Euler, 1 and 4
steps, tiny decoder (TAESD architecture). Each variant runs in its own process, one after the other in
this run, so that its peak memory (resident set, loading included) is its own.

    python -m bench.bench_openvino     # minutes; about 10 GB of RAM and 12 GB of temporary disk
    BENCH_OV_DIR=/tmp/ov python -m bench.bench_openvino   # keeps the models there; a rerun skips the conversions
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZE = 512
PROMPT = "a white lighthouse on black rocks in a storm, oil painting"
VARIANTS = (("PyTorch float32", "pytorch", "sd"), ("OpenVINO float32", "openvino", "ov"),
            ("OpenVINO int8", "openvino", "ov-int8"))


def measure(backend: str, model: str, decoder: str, rounds: int = 1) -> dict:
    """In this process: load the engine, warm it up, and time one image of 1 and of 4 steps (median of
    ``rounds``); peak resident memory of the process."""
    import resource
    import statistics

    from sdserver.engines import GenerationJob, get_engine

    started = time.perf_counter()
    engine = get_engine("diffusers", backend=backend, model=model, decoder=decoder, dtype="float32")
    loaded = time.perf_counter() - started

    def one(steps: int, seed: int) -> float:
        job = GenerationJob(prompt=PROMPT, seeds=[seed], subseeds=[seed], width=SIZE, height=SIZE, steps=steps,
                            cfg_scale=0.0, sampler_name="Euler")
        t0 = time.perf_counter()
        engine.generate(job, lambda step, preview: True)
        return time.perf_counter() - t0

    one(1, 0)  # warm-up: first-call costs (kernel selection, allocations, OpenVINO's shape inference)
    result = {"load": loaded}
    for steps in (1, 4):
        result[steps] = statistics.median(one(steps, seed) for seed in range(1, rounds + 1))
    result["peak_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KB on Linux
    result["loadavg"] = os.getloadavg()[0]  # other jobs on the machine slow every timing: say how busy it was
    return result


def run(rounds: int = 1) -> list[str]:
    import torch

    from .bench_diffusers import build_sd_turbo_shaped

    out = [f"OpenVINO vs PyTorch on {platform.machine()} CPU ({os.cpu_count()} cores, load average "
           f"{os.getloadavg()[0]:.1f}): SD-Turbo-shaped model, random weights, {SIZE}x{SIZE}, tiny decoder, "
           "float32 compute"]
    keep = os.environ.get("BENCH_OV_DIR")
    with tempfile.TemporaryDirectory(prefix="bench-openvino-") as scratch:
        root = Path(keep or scratch)
        if not (root / "taesd").is_dir():
            pipe, tiny = build_sd_turbo_shaped(torch.float32)
            pipe.save_pretrained(root / "sd")
            tiny.save_pretrained(root / "taesd")
            del pipe, tiny
        for int8, name in ((False, "ov"), (True, "ov-int8")):
            if (root / name / "model_index.json").is_file():
                out.append(f"conversion to OpenVINO {'int8' if int8 else 'float32'}: kept from a run before, in {root}")
                continue
            t0 = time.perf_counter()
            # In a child process: the export's memory is returned to the system before the timings.
            _child(["export", str(root / "sd"), str(root / name), "1" if int8 else "0"])
            out.append(f"conversion to OpenVINO {'int8' if int8 else 'float32'}: {time.perf_counter() - t0:.0f} s, "
                       f"{_size_gb(root / name):.2f} GB on disk (PyTorch float32: {_size_gb(root / 'sd'):.2f} GB)")
        results = {}
        for label, backend, folder in VARIANTS:
            results[label] = json.loads(_child(["measure", backend, str(root / folder), str(root / "taesd"),
                                                str(rounds)]))
    base = results["PyTorch float32"]
    for label, result in results.items():
        ratios = "" if result is base else (f" -> ratio {result['1'] / base['1']:.2f} (1 step), "
                                            f"{result['4'] / base['4']:.2f} (4 steps) against PyTorch float32")
        out.append(f"{label}: 1 step {result['1']:.1f} s, 4 steps {result['4']:.1f} s per image, peak memory "
                   f"{result['peak_gb']:.1f} GB, load {result['load']:.0f} s, machine's load average "
                   f"{result['loadavg']:.1f}{ratios}")
    return out


def _child(args: list[str]) -> str:
    done = subprocess.run([sys.executable, "-m", "bench.bench_openvino", *args], capture_output=True, text=True,
                          check=False)
    if done.returncode:
        raise RuntimeError(f"bench.bench_openvino {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout.strip().splitlines()[-1]


def _size_gb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e9


if __name__ == "__main__":  # python -m bench.bench_openvino [export SRC OUT INT8 | measure BACKEND MODEL DECODER N]
    if sys.argv[1:2] == ["export"]:
        from sdserver.engines.openvino_backend import export_folder

        export_folder(sys.argv[2], Path(sys.argv[3]), int8=sys.argv[4] == "1")
        print("{}")
    elif sys.argv[1:2] == ["measure"]:
        print(json.dumps(measure(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))))
    else:
        for text in run():
            print(text, flush=True)
