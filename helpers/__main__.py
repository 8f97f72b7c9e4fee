"""Command line: ``python -m helpers doctor|serve``.

    python -m helpers doctor          # preflight checks, exit code 1 if one failed
    python -m helpers models          # download the CLIP weights ahead of a class (needs internet)
    python -m helpers serve --port 7860 --engine preview   # the kit's A1111-compatible server
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m helpers", description="The course kit's command line.")
    sub = parser.add_subparsers(dest="command", required=True)
    doctor = sub.add_parser("doctor", help="check Python, packages and the A1111 server, with a fix for each failure")
    doctor.add_argument("--no-a1111", action="store_true", help="skip the A1111 server checks")
    doctor.add_argument("--no-llm", action="store_true", help="skip the LLM server check")
    sub.add_parser("models", help="download the configured CLIP weights into the cache (needs internet)")
    sub.add_parser("serve", help="start the kit's A1111-compatible server (all options: python -m helpers.sdserver -h)",
                   add_help=False)

    if argv[:1] == ["serve"]:
        from .sdserver.__main__ import main as serve

        return serve(argv[1:])
    args = parser.parse_args(argv)
    if args.command == "doctor":
        from .doctor import print_report, run_checks

        return 0 if print_report(run_checks(include_a1111=not args.no_a1111, include_llm=not args.no_llm)) else 1
    if args.command == "models":
        from .clipqa import ClipError, ClipScorer

        try:
            scorer = ClipScorer()
        except ClipError as err:
            print(err)
            return 1
        print(f"CLIP ready: {scorer!r} (loaded in {scorer.load_seconds:.1f} s)")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
