"""Every machine-dependent choice of the engine, each branch forced, so that what passes on one CPU
passes on the next (the machines differ: with or without native bfloat16, with or without a GPU).

* ``cpu_has_fast_bf16``: x86 asks PyTorch for AVX512-BF16 or AMX; other CPUs time a product;
* ``pick_dtype("auto", device)``: float16 on a GPU, bfloat16 on a CPU with native bf16, else float32;
* ``pick_device("auto")``: CUDA, then MPS, then the CPU;
* ``choose_backend``: PyTorch with a GPU, OpenVINO when converted and no GPU, else PyTorch;
* ``pick_ov_device``: an Intel GPU when OpenVINO finds one, else the CPU.

Which precision a real image takes in each of these is tests/test_dtypes.py.
"""

from __future__ import annotations

import pytest
from conftest import HAS_DIFFUSERS

torch = pytest.importorskip("torch")

from sdserver.engines import devices  # noqa: E402
from sdserver.engines.base import EngineUnavailable  # noqa: E402


@pytest.fixture
def x86(monkeypatch):
    """An x86 CPU whose bfloat16 and AMX answers the test sets."""
    monkeypatch.setattr(devices.platform, "machine", lambda: "x86_64")

    def cpu(bf16: bool | None, amx: bool | None):
        for name, answer in (("_is_avx512_bf16_supported", bf16), ("_is_amx_tile_supported", amx)):
            if answer is None:
                monkeypatch.delattr(torch.cpu, name, raising=False)  # an older PyTorch without the probe
            else:
                monkeypatch.setattr(torch.cpu, name, lambda answer=answer: answer, raising=False)

    return cpu


@pytest.mark.parametrize("bf16, amx, fast", [(True, False, True), (False, True, True), (False, False, False),
                                             (None, None, False), (None, True, True)])
def test_x86_has_fast_bf16_when_pytorch_sees_avx512_bf16_or_amx(x86, bf16, amx, fast):
    x86(bf16, amx)
    assert devices.cpu_has_fast_bf16() is fast


def test_other_cpus_time_a_product_in_both_precisions(monkeypatch):
    monkeypatch.setattr(devices.platform, "machine", lambda: "aarch64")
    clock = {"now": 0.0, "cost": {torch.float32: 1.0, torch.bfloat16: 2.0}}
    monkeypatch.setattr(devices.time, "perf_counter", lambda: clock["now"])
    real_matmul = torch.Tensor.__matmul__

    def matmul(a, b):  # each product advances the clock by what it "costs" in its precision
        clock["now"] += clock["cost"][a.dtype]
        return real_matmul(a, b)

    monkeypatch.setattr(torch.Tensor, "__matmul__", matmul)
    assert devices.cpu_has_fast_bf16() is False  # twice as slow in bfloat16: emulated
    clock["cost"][torch.bfloat16] = 0.5
    assert devices.cpu_has_fast_bf16() is True  # faster: native

    def no_bf16(a, b):
        raise RuntimeError("bfloat16 is not supported on this CPU")

    monkeypatch.setattr(torch.Tensor, "__matmul__", no_bf16)
    assert devices.cpu_has_fast_bf16() is False


@pytest.mark.parametrize("device, fast_bf16, expected", [
    ("cpu", True, torch.bfloat16), ("cpu", False, torch.float32),
    ("cuda", False, torch.float16), ("cuda:1", True, torch.float16), ("mps", False, torch.float16)])
def test_auto_precision_per_device_and_cpu(monkeypatch, device, fast_bf16, expected):
    monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda: fast_bf16)
    assert devices.pick_dtype("auto", device) == expected


def test_a_named_precision_is_used_everywhere_and_an_unknown_one_says_the_choices(monkeypatch):
    monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda: pytest.fail("not asked when a precision is named"))
    for name in ("float32", "bfloat16", "float16"):
        assert devices.pick_dtype(name, "cpu") == getattr(torch, name)
    with pytest.raises(EngineUnavailable, match="unknown") as caught:
        devices.pick_dtype("int4", "cpu")
    assert "float32" in caught.value.fix and "bfloat16" in caught.value.fix


@pytest.mark.parametrize("cuda, mps, expected", [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")])
def test_auto_device_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert devices.pick_device("auto") == expected


def test_a_device_that_is_not_there_says_what_to_use(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(EngineUnavailable, match="no CUDA GPU") as caught:
        devices.pick_device("cuda")
    assert "--device cpu" in caught.value.fix
    with pytest.raises(EngineUnavailable, match="MPS"):
        devices.pick_device("mps")
    assert devices.pick_device("cpu") == "cpu"


@pytest.mark.skipif(not HAS_DIFFUSERS, reason="needs the diffusers extra")
@pytest.mark.parametrize("cuda, mps, expected", [(True, False, "pytorch"), (False, True, "pytorch"),
                                                 (False, False, "openvino")])
def test_auto_backend_takes_a_gpu_before_a_converted_model(monkeypatch, tmp_path, cuda, mps, expected):
    from sdserver.engines import openvino_backend

    monkeypatch.setattr(openvino_backend, "is_installed", lambda: True)
    monkeypatch.setattr(openvino_backend, "find_converted", lambda model, int8: tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    backend, why = openvino_backend.choose_backend("some/model")
    assert backend == expected and why
    # Without a conversion, or without OpenVINO, PyTorch, saying how to get the faster path.
    monkeypatch.setattr(openvino_backend, "find_converted", lambda model, int8: None)
    assert openvino_backend.choose_backend("some/model")[0] == "pytorch"
    monkeypatch.setattr(openvino_backend, "is_installed", lambda: False)
    backend, why = openvino_backend.choose_backend("some/model")
    assert backend == "pytorch" and "OpenVINO is not installed" in why
    assert openvino_backend.choose_backend("some/model", device="GPU")[0] == "openvino"  # named: OpenVINO's


@pytest.mark.parametrize("found, expected", [(["CPU"], "CPU"), (["CPU", "GPU"], "GPU"),
                                             (["CPU", "GPU.0", "GPU.1"], "GPU")])
def test_openvino_auto_device_is_an_intel_gpu_when_there_is_one(monkeypatch, found, expected):
    openvino = pytest.importorskip("openvino")
    from sdserver.engines import openvino_backend

    class Core:
        available_devices = found

    monkeypatch.setattr(openvino, "Core", Core)
    assert openvino_backend.pick_ov_device("auto") == expected
    with pytest.raises(EngineUnavailable, match="PyTorch device"):
        openvino_backend.pick_ov_device("cuda")
