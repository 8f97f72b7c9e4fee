"""Command line: ``python -m sdserver [--host 127.0.0.1] [--port 7860] [--engine preview]``.

Flags follow A1111 where they exist (``--port``, ``--api-auth``, ``--nowebui``, ``--api``,
``--api-log``, ``--ckpt-dir``); ``--step-delay`` is the kit's own: seconds per sampling step of the
preview engine, so that progress bars and interrupt can be tried in class. The ``--max-...`` flags
bound what one request may cost (see limits.py); the defaults suit a class on one GPU server.

With ``--engine diffusers`` the server makes real images with Hugging Face diffusers (needs the
``diffusers`` extra). The model is loaded once at start-up; if it cannot be (not downloaded, wrong
name, out of memory) the server says why and how to fix it, and exits with status 1.

Examples:
    python -m sdserver --port 7860 --step-delay 0.1 --api-auth teacher:s3cret
    python -m sdserver --engine diffusers --model stabilityai/sd-turbo --download   # once, online
    python -m sdserver --engine diffusers                                           # then offline
    python -m sdserver --engine diffusers --convert-openvino       # once, offline: faster on an Intel/AMD CPU
    python -m sdserver --engine diffusers --backend openvino       # (--backend auto picks it when converted)
    python -m sdserver --engine diffusers --model ~/models/my-sd15-folder --decoder full
    python -m sdserver --host 0.0.0.0 --api-auth teacher:s3cret --max-images 16   # for a class
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import sys

from .engines import ENGINES
from .limits import Limits

LIMIT_HELP = {
    "max_cost": "megapixel-steps per request: width x height x images x steps (hires second pass included), "
                "1 megapixel = 1024x1024 (default %(default)s: e.g. 8 images of 1024x1024 with 100 steps)",
    "max_images": "images per request, batch_size x n_iter (default %(default)s)",
    "max_megapixels": "pixels of all the images one request returns, in megapixels of 1024x1024 (default "
                      "%(default)s: 16 images of 1024x1024 or 64 of 512x512)",
    "max_prompt_chars": "characters per prompt, negative prompt, hires prompt and infotext (default %(default)s)",
    "max_decode_megapixels": "pixels of each image a client sends to png-info or interrogate, checked before "
                             "decoding (default %(default)s: 4096x4096)",
    "max_body_mb": "size of a request body in MB, base64 images included (default %(default)s)",
}


def positive(kind):
    """An argparse type: a finite number above 0 (inf, nan, 0 and negatives are refused)."""
    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None
        if not (0 < value < math.inf):
            raise argparse.ArgumentTypeError(f"must be above 0 and finite, got {text}")
        return value
    return convert


def seconds(text: str) -> float:
    """An argparse type for --step-delay: 0 to 10 seconds."""
    from .app import MAX_STEP_DELAY

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= MAX_STEP_DELAY:  # False for nan
        raise argparse.ArgumentTypeError(f"must be a number of seconds from 0 to {MAX_STEP_DELAY:g}, got {text}")
    return value


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine only (127.x.x.x, ::1, localhost); any other name may be reachable."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, api_auth: str | None) -> str | None:
    """The warning for a server reachable from other machines with no password, else None.

    >>> exposure_warning("127.0.0.1", None) is None
    True
    >>> "--api-auth user:pass" in exposure_warning("0.0.0.0", None)
    True
    """
    if api_auth or is_loopback(host):
        return None
    return (f"WARNING: --host {host} makes the server reachable from other machines, and without --api-auth "
            "anyone who can reach it can generate images, change its settings and switch its model. "
            "Fix: add --api-auth user:pass (and give the password only to your class), or use --host 127.0.0.1.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sdserver",
        description="The course kit's A1111-compatible HTTP server (/sdapi/v1/*).")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 opens it to the network)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860, like A1111)")
    parser.add_argument("--engine", choices=ENGINES, default="preview",
                        help="image engine: preview (default: labelled placeholder images, no GPU) or diffusers "
                             "(real images from a Stable Diffusion model on this machine)")
    parser.add_argument("--api-auth", default=None, metavar="USER:PASS[,USER2:PASS2]",
                        help="require HTTP Basic auth on /sdapi/v1/*, like A1111's --api-auth")
    parser.add_argument("--step-delay", type=seconds, default=0.0, metavar="SECONDS",
                        help="seconds per sampling step (0 to 10), to watch progress and try interrupt (default 0; "
                             "with diffusers: added to each real step)")
    parser.add_argument("--api-log", action="store_true", help="print one line per request")
    # Accepted so that A1111 command lines can be pasted; the kit's server is always API-only.
    parser.add_argument("--nowebui", action="store_true",
                        help="serve the API alone, without the web UI at / (as A1111's --nowebui)")
    parser.add_argument("--api", action="store_true", help="ignored (the API is always on)")
    parser.add_argument("--lora-dir", default=None, metavar="DIR",
                        help="folder of LoRA files (*.safetensors, *.pt, *.ckpt, subfolders too) for "
                             "<lora:name:weight> in prompts, like A1111's --lora-dir (default: the SD_LORA_DIR "
                             "setting, else the kit's data/loras with its demo LoRA 'kit-demo')")

    bounds = parser.add_argument_group("limits per request (a 422 names the flag when a request exceeds one)")
    defaults = Limits()
    for name, text in LIMIT_HELP.items():
        kind = int if isinstance(getattr(defaults, name), int) else float
        bounds.add_argument("--" + name.replace("_", "-"), type=positive(kind), default=getattr(defaults, name),
                            metavar="N", help=text)

    real = parser.add_argument_group("diffusers engine (--engine diffusers)")
    real.add_argument("--model", default=None, metavar="ID_OR_PATH",
                      help="Hugging Face id (from the local cache; default: the SD_MODEL setting, else "
                           "stabilityai/sd-turbo), a diffusers "
                           "folder, or an A1111 .safetensors checkpoint (then also --config). SD 1.x/2.x only")
    real.add_argument("--config", default=None, metavar="DIR_OR_ID",
                      help="for a single .safetensors checkpoint: a diffusers folder or Hugging Face id of the same "
                           "architecture whose config files diffusers reads (default: a folder named like the "
                           "checkpoint next to it)")
    real.add_argument("--ckpt-dir", default=None, metavar="DIR",
                      help="a folder of diffusers model folders that clients may switch to (POST /options "
                           "sd_model_checkpoint), like A1111's --ckpt-dir; clients can choose only the models "
                           "GET /sdapi/v1/sd-models lists")
    real.add_argument("--decoder", default="auto", metavar="auto|tiny|full|PATH",
                      help="VAE decoder for the final image: tiny (TAESD, several times faster on a CPU, slightly "
                           "softer details), full (the model's own VAE), auto (default: tiny on a CPU, full on a "
                           "GPU; full if TAESD is not downloaded), or a folder with an AutoencoderTiny")
    real.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                      help="precision: auto (default: float16 on a GPU, bfloat16 on a CPU with native bf16, "
                           "else float32)")
    real.add_argument("--device", default="auto", metavar="auto|cpu|cuda|cuda:N|mps|gpu",
                      help="where to run: auto (default: cuda, then mps, then cpu; with --backend openvino: an "
                           "Intel GPU when OpenVINO finds one, else cpu); gpu, GPU.1, NPU: OpenVINO's devices")
    real.add_argument("--backend", default="auto", choices=("auto", "pytorch", "openvino"),
                      help="auto (default: a CUDA or MPS GPU with PyTorch, else OpenVINO when it is installed and "
                           "the model converted, else PyTorch on the CPU), pytorch, or openvino (the model "
                           "converted once with --convert-openvino; needs the openvino extra)")
    real.add_argument("--int8", action="store_true",
                      help="OpenVINO with 8-bit weights (about half the memory of float32): with "
                           "--convert-openvino, convert so; with --backend openvino, serve that conversion")
    real.add_argument("--convert-openvino", action="store_true",
                      help="convert the downloaded model to OpenVINO (the kit's cache next to the Hugging Face "
                           "cache), then exit; offline; what `make models-sd OPENVINO=1` runs after the download")
    real.add_argument("--download", action="store_true",
                      help="download the model (fp16 weights, ~2.6 GB for sd-turbo), the tiny decoder and any "
                           "--config files into the Hugging Face cache, then exit (needs internet; what `make "
                           "models-sd` runs)")
    return parser


def diffusers_options(args: argparse.Namespace) -> dict:
    """The engine options given on the command line (only those of the diffusers engine)."""
    options = {"model": model_of(args), "config": args.config, "decoder": args.decoder, "dtype": args.dtype,
               "device": args.device, "ckpt_dir": args.ckpt_dir}
    if args.backend != "pytorch":
        options.update(backend=args.backend, int8=args.int8)  # resolved by engines.get_engine
    return options


def model_of(args: argparse.Namespace) -> str | None:
    """--model, else the SD_MODEL setting (.env or environment), else None: the engine's default."""
    from helpers.config import load_settings

    return args.model or load_settings().sd_model


def lora_dir_of(args: argparse.Namespace) -> str | None:
    """--lora-dir, else the SD_LORA_DIR setting, else None: the kit's data/loras."""
    from helpers.config import load_settings

    return args.lora_dir or load_settings().sd_lora_dir


def download(args: argparse.Namespace) -> int:
    """--download: fetch what the diffusers engine needs while online, then exit."""
    from .engines import EngineUnavailable

    try:
        from .engines.diffusers_models import DEFAULT_MODEL
        from .engines.diffusers_models import download as fetch
    except ImportError as error:
        print(f"--download needs the diffusers extra ({error}). Fix: pip install -e '.[diffusers]'", file=sys.stderr)
        return 1
    model = model_of(args) or DEFAULT_MODEL
    print(f"Downloading {model} (and the tiny decoder) into the Hugging Face cache; this needs internet "
          "and takes a while the first time...", flush=True)
    try:
        for line in fetch(model, decoder=args.decoder, config=args.config):
            print("  " + line, flush=True)
    except EngineUnavailable as error:
        print(f"Download failed: {error}", file=sys.stderr)
        return 1
    except Exception as error:  # offline, HF_HUB_OFFLINE=1, a wrong id, a gated model...
        print(f"Download of {model} failed: {type(error).__name__}: {error}\n"
              "Fix: check the internet connection and the model id; unset HF_HUB_OFFLINE; for a gated model, "
              "accept its licence on huggingface.co and log in with `hf auth login`.", file=sys.stderr)
        return 1
    print(f"Done. Start the server with: python -m sdserver --engine diffusers --model {model}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .app import parse_api_auth

    if args.api_auth is not None:
        try:
            parse_api_auth(args.api_auth)
        except ValueError as error:
            parser.error(str(error))  # exits with status 2 and the usage line
    engine_options = {}
    if args.engine == "diffusers":
        if args.download:
            return download(args)
        if args.convert_openvino:
            from .engines.openvino_backend import convert_command

            return convert_command(model_of(args), config=args.config, int8=args.int8)
        engine_options = diffusers_options(args)
        if engine_options.get("backend") == "auto":
            from .engines.openvino_backend import choose_backend

            engine_options["backend"], why = choose_backend(engine_options["model"], args.device, args.int8)
            print(f"Backend: {engine_options['backend']} ({why}).", flush=True)
    elif args.model or args.config or args.download or args.ckpt_dir or args.convert_openvino:
        parser.error("--model, --config, --ckpt-dir, --download and --convert-openvino go with --engine diffusers")
    limits = Limits(**{name: getattr(args, name) for name in LIMIT_HELP})

    import uvicorn

    from . import create_app
    from .engines import EngineUnavailable

    warning = exposure_warning(args.host, args.api_auth)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    flags = {"host": args.host, "port": args.port, "listen": not is_loopback(args.host),
             "api_log": args.api_log, **engine_options}
    if args.engine == "diffusers":
        model = engine_options["model"] or "default: stabilityai/sd-turbo"
        print(f"Loading the model for the diffusers engine ({model})...", flush=True)
    try:
        app = create_app(engine=args.engine, api_auth=args.api_auth, step_delay=args.step_delay, cmd_flags=flags,
                         limits=limits, webui=not args.nowebui,
                         lora_dir=lora_dir_of(args), **engine_options)
    except EngineUnavailable as error:
        # Say it now, with the fix, rather than serve errors or broken images later.
        print(f"The kit's server cannot start the {args.engine} engine: {error}", file=sys.stderr)
        return 1
    engine = app.state.engine
    url = f"http://{args.host}:{args.port}"
    auth_note = ", HTTP Basic auth on /sdapi/v1/*" if args.api_auth else ""
    page = "" if args.nowebui else f"web UI: {url}/, "
    print(f"Kit's A1111-compatible server listening on {url} ({page}API docs: {url}/docs{auth_note}). "
          f"Engine '{engine.name}': {engine.description}.", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info" if args.api_log else "warning",
                access_log=args.api_log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
