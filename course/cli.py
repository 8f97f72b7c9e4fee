"""The pipeline and demo commands of ``python -m course`` (see course/__main__.py)."""

from __future__ import annotations

from helpers.config import KIT_ROOT
from helpers.errors import KitError

EXAMPLES = KIT_ROOT / "data" / "examples" / "inputs.txt"


def example_inputs() -> list[str]:
    """The example keyword lines of data/examples/inputs.txt."""
    lines = EXAMPLES.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def print_table(run) -> None:
    """A summary table of a run's candidates, best marked."""
    best = run.best
    print(f"{'#':>3}  {'seed':>10}  {'score':>7}  round  file")
    for c in run.candidates:
        score = "-" if c.score is None else f"{c.score:.3f}"
        mark = "  <- best" if best is not None and c.index == best.index else ""
        print(f"{c.index:>3}  {c.seed:>10}  {score:>7}  {c.round:>5}  {c.file}{mark}")


def pipeline_command(args) -> int:
    from helpers.pipeline import run_pipeline

    try:
        run = run_pipeline(args.keywords, n=args.n, mode=args.mode, threshold=args.threshold,
                           max_images=args.max_images, text_source=args.text_source, out_dir=args.out,
                           width=args.size, height=args.size, **({"steps": args.steps} if args.steps else {}))
    # KitError: any error of the kit (A1111, LLM, CLIP, settings, ...); ValueError: an argument run_pipeline
    # refuses, such as --mode threshold without --threshold.
    except (KitError, ValueError) as err:
        print(f"error: {err}")
        return 1
    print(run.summary())
    print_table(run)
    print(f"run folder: {run.path}\nreport: {run.report()}")
    return 0


def demo_command(args) -> int:
    """Use A1111 and the LLM when they answer; otherwise the kit's own server, retrieval and the baseline."""
    from helpers.backends import connect_a1111
    from helpers.llm import LLM
    from helpers.pipeline import run_pipeline

    keywords = args.keywords or example_inputs()[0]
    client = connect_a1111(start_server=True, step_delay=0.0)
    llm = LLM(timeout=60)
    if llm.available():
        print(f"LLM: using {llm.model} at {llm.base_url}")
    else:
        print(f"LLM: none answered at {llm.base_url} (text by retrieval, prompt by the baseline)")
    # connect_a1111 set the loaded model's steps and CFG scale as the client's defaults.
    size = 256 if client.placeholder else client.hints.size
    run = run_pipeline(keywords, n=4, client=client, llm=llm, out_dir=args.out, width=size, height=size)
    print()
    print(run.summary())
    print_table(run)
    report = run.report()
    placeholders = []
    if run.placeholder:
        placeholders.append("images (kit's offline preview engine)")
    if run.text.get("source") == "corpus":
        placeholders.append("no LLM: text retrieved from the corpus")
    if run.prompt is not None and run.prompt.source == "baseline":
        placeholders.append("no LLM: rule-based baseline prompt")
    if run.scorer is None:
        placeholders.append("no CLIP weights: unscored (run `make models` while online)")
    print(f"\nReport: {report}")
    print("Stand-ins used: " + ("; ".join(placeholders) if placeholders else "none, all backends are real"))
    return 0
