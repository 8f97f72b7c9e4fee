"""Command line: ``python -m helpers.sdserver [--host 127.0.0.1] [--port 7860] [--engine preview]``.

Flags follow A1111 where they exist (``--port``, ``--api-auth``, ``--nowebui``, ``--api``,
``--api-log``); ``--step-delay`` is the kit's own: seconds per sampling step of the preview
engine, so that progress bars and interrupt can be tried in class.

Example:
    python -m helpers.sdserver --port 7860 --step-delay 0.1 --api-auth teacher:s3cret
"""

from __future__ import annotations

import argparse
import sys

from .engines import ENGINES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m helpers.sdserver",
        description="The course kit's A1111-compatible HTTP server (/sdapi/v1/*).")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 opens it to the network)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860, like A1111)")
    parser.add_argument("--engine", choices=ENGINES, default="preview",
                        help="image engine (default preview: labelled placeholder images, no GPU)")
    parser.add_argument("--api-auth", default=None, metavar="USER:PASS[,USER2:PASS2]",
                        help="require HTTP Basic auth on /sdapi/v1/*, like A1111's --api-auth")
    parser.add_argument("--step-delay", type=float, default=0.0, metavar="SECONDS",
                        help="seconds per sampling step, to watch progress and try interrupt (default 0)")
    parser.add_argument("--api-log", action="store_true", help="print one line per request")
    # Accepted so that A1111 command lines can be pasted; the kit's server is always API-only.
    parser.add_argument("--nowebui", action="store_true", help="ignored (the kit's server has no web UI)")
    parser.add_argument("--api", action="store_true", help="ignored (the API is always on)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .app import parse_api_auth

    if args.api_auth is not None:
        try:
            parse_api_auth(args.api_auth)
        except ValueError as error:
            build_parser().error(str(error))  # exits with status 2 and the usage line
    if args.step_delay < 0:
        build_parser().error("--step-delay must be 0 or more seconds")

    import uvicorn

    from . import create_app

    flags = {"host": args.host, "port": args.port, "listen": args.host not in ("127.0.0.1", "localhost"),
             "api_log": args.api_log}
    app = create_app(engine=args.engine, api_auth=args.api_auth, step_delay=args.step_delay, cmd_flags=flags)
    engine = app.state.engine
    url = f"http://{args.host}:{args.port}"
    auth_note = ", HTTP Basic auth on /sdapi/v1/*" if args.api_auth else ""
    print(f"Kit's A1111-compatible server listening on {url} (API docs: {url}/docs{auth_note}). "
          f"Engine '{engine.name}': {engine.description}.", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info" if args.api_log else "warning",
                access_log=args.api_log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
