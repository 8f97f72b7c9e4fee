"""Run every benchmark and print its ratios: ``python -m bench`` (``make bench``)."""

from __future__ import annotations

import platform

from . import (
    bench_client,
    bench_clip,
    bench_diffusers,
    bench_grading,
    bench_import,
    bench_openvino,
    bench_pipeline,
    bench_raters,
)


def main() -> None:
    print(f"# benchmarks on {platform.machine()}, Python {platform.python_version()}; "
          "ratios < 1 mean the first is faster")
    for module in (bench_import, bench_client, bench_clip, bench_raters, bench_pipeline, bench_grading):
        for text in module.run():
            print(text, flush=True)
    # The diffusers engine at real size takes minutes and ~7 GB: run it only where it is installed.
    try:
        import diffusers  # noqa: F401
    except ImportError:
        print("diffusers: not installed (pip install -e '.[diffusers]'), skipped")
        return
    for text in bench_diffusers.run():
        print(text, flush=True)
    # OpenVINO against PyTorch (the openvino extra): minutes more, ~10 GB of RAM.
    from sdserver.engines.openvino_backend import is_installed

    if not is_installed():
        print("openvino: not installed (pip install -e '.[diffusers,openvino]'), skipped")
        return
    for text in bench_openvino.run():
        print(text, flush=True)


if __name__ == "__main__":
    main()
