"""Command line: ``python -m course doctor|models|pipeline|demo|submit|student|grade|serve``.

    python -m course doctor          # preflight checks, exit code 1 if one failed
    python -m course models          # download the CLIP weights ahead of a class (needs internet)
    python -m course pipeline "lighthouse, storm" --n 5      # run the whole pipeline once
    python -m course demo            # the pipeline on an example, with whatever backends answer
    python -m course submit --name ann  # every notebooks/NN_*.ipynb (or --dir dist/student) in one zip for Moodle
    python -m course submit notebooks/06_full_pipeline.ipynb --name ann   # one notebook's files for Moodle
    python -m course student         # student versions of the notebooks in dist/student/
    python -m course serve --port 7860 --engine preview   # the kit's A1111-compatible server
    python -m course grade --submissions download.zip --worksheet worksheet.csv   # grade a Moodle download

``python -m helpers ...`` (helpers/__main__.py) and the ``kit`` script run this same command line;
the Makefile's doctor, models, demo, student and submission targets call it.
"""

from __future__ import annotations

import argparse
import sys

from helpers.errors import KitError


def main(argv: list[str] | None = None, prog: str = "python -m course") -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog=prog, description="The course kit's command line.")
    sub = parser.add_subparsers(dest="command", required=True)
    doctor = sub.add_parser("doctor", help="check Python, packages and the A1111 server, with a fix for each failure")
    doctor.add_argument("--no-a1111", action="store_true", help="skip the A1111 server checks")
    doctor.add_argument("--no-llm", action="store_true", help="skip the LLM server check")
    sub.add_parser("models", help="download the configured CLIP weights (and a SigLIP tokenizer) into the cache "
                   "(needs internet)")
    pipe = sub.add_parser("pipeline", help="keywords -> text -> prompt -> images -> CLIP scores -> best image")
    pipe.add_argument("keywords", help='a few keywords, e.g. "lighthouse, storm"')
    pipe.add_argument("--n", type=int, default=5, help="candidates in best mode (default 5)")
    pipe.add_argument("--mode", choices=["best", "threshold"], default="best")
    pipe.add_argument("--threshold", type=float, default=None, help="CLIP cosine to reach in threshold mode")
    pipe.add_argument("--max-images", type=int, default=20, help="budget in threshold mode")
    pipe.add_argument("--text-source", choices=["auto", "llm", "corpus", "rag"], default="auto")
    pipe.add_argument("--steps", type=int, default=None,
                      help="sampling steps (default: what suits the loaded model, e.g. 20, or 1 for sd-turbo)")
    pipe.add_argument("--size", type=int, default=512, help="width and height in pixels (multiple of 8)")
    pipe.add_argument("--out", default=None, help="folder for runs (default outputs/runs)")
    demo = sub.add_parser("demo", help="run the pipeline on an example with whatever backends answer")
    demo.add_argument("keywords", nargs="?", default=None, help="keywords (default: the first example)")
    demo.add_argument("--out", default=None, help="folder for runs (default outputs/runs)")
    submit = sub.add_parser("submit", help="check your notebooks and write one .zip for Moodle (or one notebook's)")
    submit.add_argument("notebook", nargs="?", default=None,
                        help="one notebook to submit alone (default: every NN_*.ipynb of --dir, in one zip)")
    submit.add_argument("--dir", default=None, help="the folder you work in (default notebooks/), e.g. dist/student")
    submit.add_argument("--name", default=None, help="your name or student id (default: your user name)")
    submit.add_argument("--max-mb", type=float, default=2.0, help="size budget in MB (default 2)")
    submit.add_argument("--execute", action="store_true", help="run the notebook(s) top to bottom here first")
    submit.add_argument("--out", default=None, help="folder for the files (default submission/)")
    student = sub.add_parser("student", help="write student versions (solutions stubbed) to dist/student/")
    student.add_argument("--out", default=None)
    grading = sub.add_parser("grade", help="run every notebook of Moodle's 'Download all submissions' zip and fill "
                                           "in its grading worksheet")
    grading.add_argument("--submissions", required=True, help="the zip from Moodle's 'Download all submissions'")
    grading.add_argument("--worksheet", required=True, help="the CSV from Moodle's 'Download grading worksheet'")
    grading.add_argument("--out", default=None, help="folder for the results (default outputs/grading)")
    grading.add_argument("--points", default=None, help="points table, JSON or TOML (default data/grading/points.json)")
    grading.add_argument("--cell-timeout", type=int, default=120, help="seconds per cell (default 120)")
    grading.add_argument("--notebook-timeout", type=int, default=600, help="seconds per notebook (default 600)")
    grading.add_argument("--memory-mb", type=int, default=4096, help="memory per notebook in MB (default 4096)")
    grading.add_argument("--columns", default=None,
                         help="for a worksheet in a language the kit does not know: role=header pairs, e.g. "
                              "'identifier=ID,grade=Note,modified=...,feedback=...' (README, Instructor guide)")
    grading.add_argument("--teams", default=None,
                         help="team assignment where two groups share a name: JSON {group id: [identifiers]}")
    grading.add_argument("--kit-dir", default=None,
                         help="the kit's reference notebooks the files are matched to and run as (default notebooks/)")
    grading.add_argument("--no-isolation", action="store_true",
                         help="run the notebooks without the sandbox (no sandbox here, or code you trust): "
                              "a clean environment, limits, every process ended with its notebook")
    sub.add_parser("serve", help=f"start the kit's A1111-compatible server (all options: {prog} serve -h)",
                   add_help=False)

    if argv[:1] == ["serve"]:
        from sdserver.__main__ import main as serve

        return serve(argv[1:])
    args = parser.parse_args(argv)
    if args.command == "doctor":
        from course.doctor import print_report, run_checks

        return 0 if print_report(run_checks(include_a1111=not args.no_a1111, include_llm=not args.no_llm)) else 1
    if args.command == "pipeline":
        from course.cli import pipeline_command

        return pipeline_command(args)
    if args.command == "demo":
        from course.cli import demo_command

        return demo_command(args)
    if args.command == "submit" and args.notebook is None:
        return submit_all_command(args)
    if args.command == "submit":
        from course.submission import submit as make_submission

        if args.dir:
            print(f"Give a notebook or --dir, not both: {prog} submit {args.notebook} --name ...")
            return 2
        try:
            result = make_submission(args.notebook, name=args.name, max_mb=args.max_mb, execute=args.execute,
                                     out_dir=args.out)
        except KitError as err:
            print(f"Not submitted. {err}")
            return 1
        print(result.report())
        print(f"Upload {result.zip_path} to Moodle (or the .html and .ipynb files).")
        return 0 if result.zip_path.stat().st_size <= result.budget_bytes else 1
    if args.command == "grade":
        return grade_command(args)
    if args.command == "student":
        from course.student import make_student_versions

        for path in make_student_versions(target=args.out) if args.out else make_student_versions():
            print(path)
        return 0
    if args.command == "models":
        from helpers.clipqa import ClipScorer

        try:
            scorer = ClipScorer()
        except KitError as err:
            print(err)
            return 1
        # Loading is the download: the weights and, for SigLIP models, the Hugging Face tokenizer land in the
        # Hub's cache, where a class without internet finds them.
        print(f"CLIP ready: {scorer!r}, reads {scorer.token_limit} tokens of text "
              f"(loaded in {scorer.load_seconds:.1f} s)")
        return 0
    return 2


def submit_all_command(args) -> int:
    """Every notebook of --dir in one zip, with the summary printed."""
    from course.submission import submit_all

    try:
        result = submit_all(args.dir, name=args.name, max_mb=args.max_mb, execute=args.execute, out_dir=args.out,
                            log=print)
    except KitError as err:
        print(f"Not submitted. {err}")
        return 1
    print(result.report())
    print(f"Upload {result.zip_path} to Moodle.")
    return 0 if result.zip_path.stat().st_size <= result.budget_bytes else 1


def grade_command(args) -> int:
    """Grade a Moodle download; print one line per notebook and where the files are."""
    from course.grading import Limits, grade
    from course.moodle import parse_columns
    from helpers.config import KIT_ROOT
    from helpers.errors import KitError

    out = args.out or KIT_ROOT / "outputs" / "grading"
    limits = Limits(cell_timeout=args.cell_timeout, notebook_timeout=args.notebook_timeout,
                    memory_mb=args.memory_mb)
    try:
        result = grade(args.submissions, args.worksheet, out, points=args.points, limits=limits, log=print,
                       isolate=False if args.no_isolation else None, columns=parse_columns(args.columns),
                       teams=args.teams, kit_dir=args.kit_dir)
    except (OSError, ValueError, KitError) as err:  # a missing file, a zip that is not one, no sandbox, ...
        print(f"Not graded: {err}")
        return 1
    print(f"{result.executed} notebook(s) run, the others from the cache.")
    print(f"Upload to Moodle ('Upload grading worksheet'): {result.worksheet}")
    print(f"Feedback pages: {result.worksheet.parent / 'feedback'}; class summary: {result.summary_html}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
