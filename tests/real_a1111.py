"""The real AUTOMATIC1111 web UI (v1.10.1) for the conformance lane: its environment, a tiny model, a server.

A1111 is AGPL: its code is never copied here. It stays in ``A1111_DIR`` (default: the tarball in
``../shared/a1111/`` unpacked into a cache folder) and runs as a separate process from its own virtual
environment. What this module makes with the kit's own code:

* the environment (:func:`a1111_env`): a venv from A1111's ``requirements_versions.txt`` (with the
  setuptools pin lifted: torch needs a newer one) and the same torch as the kit's, built once and kept
  in ``KIT_REAL_CACHE`` (default ``~/.cache/kit-real``) with a stamp of what went into it;
* a tiny random SD 1.x checkpoint A1111 loads (:func:`write_tiny_checkpoint`): a diffusers pipeline
  built from configs (sizes that LDM's 32-group norms accept), written in the original LDM layout by
  tests/a1111_checkpoint.py, with the ``.yaml`` A1111 reads beside it (A1111's own
  ``configs/v1-inference.yaml`` with the sizes changed, read from its folder at run time), and the text
  model's tokenizer and config in a folder of their own; LayerNorms are randomised, since at their
  initial values A1111's emphasis divides 0 by 0 (a NansException with Clip skip 2);
* an offline Hugging Face cache entry for ``openai/clip-vit-large-patch14`` (tokenizer and config, no
  weights), which A1111 reads at start-up (:func:`write_clip_cache`);
* a text-encoder LoRA for that model in kohya's layout (:func:`write_tiny_lora`), and copies of the
  checkpoint under other names (:func:`add_checkpoint`);
* the server (:func:`start_a1111`): ``launch.py --api --nowebui --server-name 127.0.0.1`` on a free port
  with a fresh data folder (A1111 keeps options set through the API in ``config.json``), stopped by its
  process id.

    >>> server = start_a1111(tmp_path)        # doctest: +SKIP
    >>> server.url                            # doctest: +SKIP
    'http://127.0.0.1:40123'
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "a1111" / "stable-diffusion-webui-1.10.1.tar.gz"
CACHE = Path(os.environ.get("KIT_REAL_CACHE", Path.home() / ".cache" / "kit-real"))
CLIP_REPO = "openai/clip-vit-large-patch14"
REVISION = "kit-offline"  # the cache entry's snapshot name (any name does)


def a1111_source() -> Path | None:
    """A1111's folder: ``A1111_DIR``, else the shared tarball unpacked into the cache (None: neither is here)."""
    if os.environ.get("A1111_DIR"):
        folder = Path(os.environ["A1111_DIR"]).expanduser()
        return folder if (folder / "launch.py").is_file() else None
    if not SHARED.is_file():
        return None
    folder = CACHE / "a1111-1.10.1"
    if not (folder / "stable-diffusion-webui" / "launch.py").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        with tarfile.open(SHARED) as archive:
            archive.extractall(folder, filter="data")
    return folder / "stable-diffusion-webui"


def _requirements(source: Path) -> list[str]:
    torch_version = _installed("torch")
    lines = [line.strip() for line in (source / "requirements_versions.txt").read_text().splitlines()]
    # A1111 pins setuptools 69.5.1; torch needs >= 77.0.3, and 80.9.0 still ships pkg_resources, which
    # lightning_fabric and openai's CLIP import.
    wanted = [line for line in lines if line and line.split("==")[0] not in ("setuptools", "torch")]
    return [f"torch=={torch_version}", f"torchvision=={_installed('torchvision')}", "setuptools==80.9.0", *wanted]


def _installed(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def a1111_env(source: Path) -> Path:
    """The python of A1111's own venv, built (minutes, once) when missing or when its requirements changed."""
    requirements = _requirements(source)
    venv = CACHE / "a1111-venv"
    stamp = venv / "kit-stamp.json"
    digest = hashlib.sha256("\n".join(requirements).encode()).hexdigest()
    python = venv / "bin" / "python"
    if stamp.is_file() and json.loads(stamp.read_text()).get("requirements") == digest and python.is_file():
        return python
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, *requirements], check=True)
    clip = source.parent / "openai-CLIP"  # launch_utils would pip-install openai's CLIP from a zip
    if clip.is_dir():
        subprocess.run([*pip, "--no-build-isolation", "--no-deps", str(clip)], check=True)
    stamp.write_text(json.dumps({"requirements": digest}))
    return python


def _tokenizer_files(folder: Path) -> None:
    """CLIP's tokenizer files as Hugging Face's were made (vocabulary and merges from open_clip's BPE file, by
    tests/tiny_sd.py): the plain files, which A1111's transformers 4.30 reads with its slow CLIPTokenizer."""
    from tiny_sd import clip_vocab_and_merges

    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_vocab_and_merges()
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n",
                                       encoding="utf-8")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
               "pad_token": "<|endoftext|>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(special))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {**special, "do_lower_case": True, "model_max_length": 77, "tokenizer_class": "CLIPTokenizer"}))


def write_clip_cache(hf_home: Path) -> None:
    """The offline cache entry A1111 reads for openai/clip-vit-large-patch14: tokenizer and ViT-L/14 text config."""
    from transformers import CLIPConfig, CLIPTextConfig, CLIPVisionConfig

    base = hf_home / "hub" / f"models--{CLIP_REPO.replace('/', '--')}"
    snapshot = base / "snapshots" / REVISION
    if (snapshot / "config.json").is_file():
        return
    snapshot.mkdir(parents=True, exist_ok=True)
    (base / "refs").mkdir(exist_ok=True)
    (base / "refs" / "main").write_text(REVISION)
    (hf_home / "hub" / "version.txt").write_text("1")
    _tokenizer_files(snapshot)
    text = CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                          projection_dim=768, max_position_embeddings=77, vocab_size=49408, hidden_act="quick_gelu")
    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=24,
                              patch_size=14, image_size=224, projection_dim=768, hidden_act="quick_gelu")
    CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=768).save_pretrained(
        str(snapshot))


def write_tiny_checkpoint(source: Path, models: Path, name: str = "kit-tiny", seed: int = 0) -> Path:
    """``models/Stable-diffusion/<name>.safetensors`` with its ``.yaml`` and text-model folder; returns the file."""
    import torch
    import yaml
    from a1111_checkpoint import save_as_a1111_checkpoint
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = models / "Stable-diffusion"
    folder.mkdir(parents=True, exist_ok=True)
    file = folder / f"{name}.safetensors"
    if file.is_file():
        return file
    torch.manual_seed(seed)
    # LDM normalises with 32 groups: every width is a multiple of 32. 8 pixels per latent, as A1111 assumes.
    unet = UNet2DConditionModel(
        sample_size=32, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        norm_num_groups=32, cross_attention_dim=32, attention_head_dim=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"))
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, sample_size=64, layers_per_block=1,
                        block_out_channels=(32, 32, 32, 32), norm_num_groups=32,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    text_config = CLIPTextConfig(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=2, max_position_embeddings=77, hidden_act="quick_gelu",
                                 projection_dim=32)
    text = CLIPTextModel(text_config)
    for module in text.modules():  # see the module doc: LayerNorms at 1 and 0 make A1111's emphasis NaN
        if isinstance(module, torch.nn.LayerNorm):
            torch.nn.init.normal_(module.weight, mean=1.0, std=0.1)
            torch.nn.init.normal_(module.bias, std=0.1)
    for module in unet.modules():  # zero-initialised output layers would make every step a no-op
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)) and not module.weight.abs().sum():
            torch.nn.init.normal_(module.weight, std=0.02)
    from tiny_sd import clip_tokenizer

    pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text, tokenizer=clip_tokenizer(),
                                   scheduler=EulerDiscreteScheduler(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    diffusers_folder = models / f"{name}-diffusers"
    pipe.save_pretrained(str(diffusers_folder))
    save_as_a1111_checkpoint(diffusers_folder, file)
    shutil.rmtree(diffusers_folder)
    clip_folder = models / f"{name}-clip"  # what the yaml's cond_stage_config names: tokenizer and config
    _tokenizer_files(clip_folder)
    text_config.save_pretrained(str(clip_folder))
    config = yaml.safe_load((source / "configs" / "v1-inference.yaml").read_text())
    params = config["model"]["params"]
    params["unet_config"]["params"].update(model_channels=32, attention_resolutions=[2], num_res_blocks=1,
                                           channel_mult=[1, 2], num_heads=2, context_dim=32)
    params["first_stage_config"]["params"]["ddconfig"].update(ch=32, ch_mult=[1, 1, 1, 1], num_res_blocks=1)
    params["cond_stage_config"]["params"] = {"version": str(clip_folder)}
    file.with_suffix(".yaml").write_text(yaml.safe_dump(config))
    return file


def write_tiny_lora(folder: Path, name: str, seed: int = 0, rank: int = 4) -> Path:
    """``folder/<name>.safetensors``: a LoRA for write_tiny_checkpoint's text model in kohya's layout
    (``lora_te_text_model_encoder_layers_N_self_attn_q_proj.lora_down.weight``, ``.lora_up.weight``, ``.alpha``).
    A1111's Lora extension maps these names onto any SD 1.x text encoder; its UNet names assume SD's block
    layout (three blocks a level), which the tiny UNet does not have, so the UNet gets no LoRA here."""
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(2):  # the tiny text model: 2 layers of width 32
        for projection in ("q_proj", "k_proj", "v_proj", "out_proj"):
            key = f"lora_te_text_model_encoder_layers_{layer}_self_attn_{projection}"
            tensors[f"{key}.lora_down.weight"] = torch.randn(rank, 32, generator=generator) * 0.5
            tensors[f"{key}.lora_up.weight"] = torch.randn(32, rank, generator=generator) * 0.5
            tensors[f"{key}.alpha"] = torch.tensor(float(rank))
    folder.mkdir(parents=True, exist_ok=True)
    file = folder / f"{name}.safetensors"
    save_file(tensors, str(file), metadata={"ss_network_module": "networks.lora", "ss_output_name": name})
    return file


def add_checkpoint(server: "A1111Server", name: str) -> str:
    """A copy of the server's tiny checkpoint (and its .yaml) under another name, for model switching and
    name-based hints; returns the name. Call ``POST /sdapi/v1/refresh-checkpoints`` after it."""
    folder = server.data / "models" / "Stable-diffusion"
    for suffix in (".safetensors", ".yaml"):
        shutil.copyfile(folder / f"kit-tiny{suffix}", folder / f"{name}{suffix}")
    return name


@dataclass
class A1111Server:
    url: str
    process: subprocess.Popen
    data: Path
    log: Path

    def stop(self) -> None:
        stop_process(self.process, grace=20)  # A1111 shuts down cleanly on SIGTERM


def stop_process(process: subprocess.Popen, grace: float) -> None:
    """Stop a server by its process id: SIGTERM, then SIGKILL after ``grace`` seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_a1111(work: Path, extra: tuple[str, ...] = (), timeout: float = 180) -> A1111Server:
    """A1111 v1.10.1 from its own venv on a free port of 127.0.0.1, API only, with the tiny model; returns
    once ``GET /sdapi/v1/options`` answers (RuntimeError with the end of its log when it does not)."""
    import requests

    source = a1111_source()
    if source is None:
        raise FileNotFoundError(f"no A1111: set A1111_DIR, or put the tarball at {SHARED}")
    python = a1111_env(source)
    data = work / "a1111-data"
    shutil.rmtree(data, ignore_errors=True)  # a fresh config.json: options set through the API persist there
    data.mkdir(parents=True)
    checkpoint = write_tiny_checkpoint(source, data / "models")
    hf_home = CACHE / "hf"
    write_clip_cache(hf_home)
    from conftest import free_port  # here: conftest imports this module while it loads

    port = free_port()
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONPATH", None)
    log = work / "a1111.log"
    command = [str(python), "launch.py", "--skip-prepare-environment", "--skip-torch-cuda-test", "--skip-version-check",
               "--use-cpu", "all", "--no-half", "--precision", "full", "--api", "--nowebui", "--server-name",
               "127.0.0.1", "--port", str(port), "--disable-safe-unpickle", "--no-download-sd-model",
               "--data-dir", str(data), "--ckpt", str(checkpoint), *extra]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=source, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    server = A1111Server(f"http://127.0.0.1:{port}", process, data, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            if requests.get(f"{server.url}/sdapi/v1/options", timeout=5, auth=_auth(extra)).status_code == 200:
                return server
        except requests.RequestException:
            pass
        time.sleep(0.5)
    server.stop()
    tail = log.read_text(errors="replace")[-3000:]
    raise RuntimeError(f"A1111 did not answer on {server.url} within {timeout:g} s:\n{tail}")


def _auth(extra: tuple[str, ...]):
    if "--api-auth" in extra:
        user, _, password = extra[extra.index("--api-auth") + 1].partition(":")
        return user, password
    return None
