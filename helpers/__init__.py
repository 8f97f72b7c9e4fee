"""helpers: the small package the course notebooks share. Read it top to bottom, one file at a time.

The lesson's data path is keywords -> text -> image prompt -> images -> scores -> run.json, and the
modules follow it; each imports only modules above it in this list:

    errors.py        KitError: every error of the kit says the cause and, on a "Fix:" line, what to do
    config.py        settings from the environment or .env (SD_URL, LLM_BASE_URL, CLIP_MODEL, ...); Secret
    urls.py          URL helpers shared by the clients (hide passwords, the localhost-is-IPv6 hint)
    infotext.py      A1111's "parameters" text in a PNG: the one writer and parser
    images.py        base64 <-> image, PNG bytes and data URIs, a pixel limit checked before decoding
    generation.py    Generation: one txt2img answer, checked and decoded (images, real seeds, infotexts)
    a1111_http.py    the HTTP layer under the client: one session, every failure an A1111Error with its fix
    a1111_fields.py  the txt2img fields with A1111's defaults, and the checks before a request is sent
    progress.py      the live progress bar and preview while an image is made
    model_hints.py   which steps / CFG scale / size suit the loaded model (sd-turbo, SDXL, LCM, ...)
    a1111.py         A1111Client: talk to A1111's /sdapi/v1 API (txt2img, progress, interrupt, options)
    backends.py      connect_a1111(): A1111 if it answers, else the kit's own server (sdserver/)
    llm.py           LLM: an OpenAI-compatible server (LM Studio, Ollama, ...): chat, vision, embeddings
    text.py          get_text(): a text from keywords by LLM, by retrieval from data/corpus, or both (RAG)
    prompts.py       write_image_prompt() by LLM, baseline_prompt() by rules, CLIP token counting and trimming
    clipqa.py        ClipScorer: image-text similarity with open_clip
    display.py       side_by_side(), a run's static HTML report, and the HTML pieces the inspector shares
    plots.py         image_grid(): images in a grid, a label under each (matplotlib)
    records.py       the run record: PipelineRun, Candidate, load_run() (run.json on disk)
    raters.py        raters for the pipeline: CLIP, caption route, question checks, VQAScore, your own
    pipeline.py      run_pipeline(): the stages that make a run (best of N, or until a threshold)
    __main__.py      `python -m helpers ...`, kept as a pass-through to the course command line

Not here, on purpose: the kit's A1111-compatible server (package ``sdserver``: students run it, not read
it) and the course tooling (package ``course``: preflight, student versions, submission, the command line,
and the Inspector, the widget that shows and rates a run's images: a tool, not a step of the pipeline).

Importing ``helpers`` loads no torch, open_clip or openai, so notebooks start fast; import the part you need:

    >>> from helpers.a1111 import A1111Client
"""

__version__ = "0.1.0"
