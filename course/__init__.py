"""The course's machinery around the notebooks: each notebook's first cell, the exercise checks, the
Inspector, preflight, student versions, Moodle submission and grading, the command line.

The notebooks' steps live in the student's package ``helpers``; this package holds what the notebooks,
instructors and the Makefile run around those steps (a student uses ``setup()`` and ``check()`` without
needing to read how they work). It imports helpers (settings, clients, the pipeline, the error family) and
never the other way round, except ``python -m helpers``, which is this command line under its old name.

Module map:

    notebook.py    setup(): the first cell of every notebook (output folder, A1111 client, placeholder note)
    exercises.py   check(): the cell after each exercise; the kit's reference while it is not done; report()
    ratings.py     the Inspector's ratings file (ratings.jsonl: tolerant reading, atomic undo); spearman()
    inspector.py   Inspector: a run's images next to its text, rated by hand; which rater agrees with you
    __main__.py    the command line: ``python -m course doctor|models|pipeline|demo|submit|student|serve``
                   (``python -m helpers ...`` and the ``kit`` script run the same), used by the Makefile
    cli.py         the pipeline and demo commands: run the whole pipeline once and print a table
    doctor.py      preflight checks (Python, packages, widgets, A1111, the LLM), each failure with its fix
    student.py     student versions of the notebooks: nbgrader's release version, without its database
    nbgrader_metadata.py  nbgrader's metadata on every cell, worked out from the markers and points.json
    secret_scan.py the secret scan of a notebook: every place, images' metadata included, never the secret
    submission.py  Moodle files for one notebook or all of them (one zip with a summary of exercises done)
    isolation.py   the graded notebook's sandbox from an allow-list (bubblewrap, or unshare + pivot_root)
    moodle.py      Moodle's grading worksheet and download layouts, as Moodle's own code reads them
    autograde.py   what a grade is based on: the kit's cells put back by id, files matched by content, ast checks
    grading.py     grade a class's Moodle download; grading_worker.py runs one notebook under limits

Every error raised here derives from ``helpers.errors.KitError`` and names its fix.
"""
