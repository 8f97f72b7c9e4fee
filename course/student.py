"""Student versions of the notebooks: every solution replaced by a stub (``make student``).

The notebooks in notebooks/ are the solution versions. Each exercise's solution sits between
nbgrader's markers ``### BEGIN SOLUTION`` and ``### END SOLUTION``, and every cell carries nbgrader's
metadata (course/nbgrader_metadata.py writes it). We run the preprocessors of ``nbgrader
generate_assignment``, in its order, on each notebook, all but ``SaveCells`` (which writes nbgrader's
database), so no course database or exchange is needed and the files are those of nbgrader's release
version (tests/test_nbgrader.py compares them): ``ClearSolutions`` replaces each solution with
``# YOUR CODE HERE`` / ``raise NotImplementedError()`` (and a Markdown answer with ``YOUR ANSWER HERE``),
``LockCells`` makes the read-only and check cells uneditable, ``ComputeChecksums`` records each graded
cell's checksum. The metadata is computed again from the markers first, so an exercise added with markers
alone works here even before ``python -m course.nbgrader_metadata`` writes it into the notebook.

Example:
    >>> from course.student import make_student_versions
    >>> make_student_versions("notebooks", "dist/student")      # doctest: +SKIP
    [PosixPath('dist/student/01_a1111_setup_and_api.ipynb'), ...]
"""

from __future__ import annotations

from pathlib import Path

from helpers.config import KIT_ROOT

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
PLAIN_KERNEL = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def check_markers(nb, name: str = "notebook") -> int:
    """Count the exercises of a notebook; raise ValueError when markers are unbalanced or nested."""
    exercises = 0
    for number, cell in enumerate(nb.cells, start=1):
        depth = 0
        for line in cell.source.splitlines():
            if line.strip() == BEGIN:
                depth += 1
                exercises += 1
                if depth > 1:
                    raise ValueError(f"{name}, cell {number}: '{BEGIN}' inside another solution block.")
            elif line.strip() == END:
                depth -= 1
                if depth < 0:
                    raise ValueError(f"{name}, cell {number}: '{END}' without a '{BEGIN}' before it.")
        if depth:
            raise ValueError(f"{name}, cell {number}: '{BEGIN}' is never closed with '{END}'.")
    return exercises


def release_preprocessors() -> list:
    """The preprocessors of ``nbgrader generate_assignment`` (its default list, in its order), without
    ``SaveCells``, which only writes nbgrader's database."""
    from nbgrader.converters import GenerateAssignment
    from nbgrader.preprocessors import SaveCells

    return [cls() for cls in GenerateAssignment.class_traits()["preprocessors"].default() if cls is not SaveCells]


def student_version(nb, stem: str | None = None):
    """A copy of a solution notebook as ``nbgrader generate_assignment`` releases it: solutions stubbed,
    hidden tests and outputs removed, cells locked. ``stem`` (the file name without .ipynb) sets nbgrader's
    metadata from the markers and data/grading/points.json first; with None, only the cells without any get
    it (from their markers, with the default points)."""
    import copy

    from course.nbgrader_metadata import with_metadata

    nb = copy.deepcopy(nb)
    with_metadata(nb, stem or "00_notebook", missing_only=stem is None)
    resources: dict = {}
    for preprocessor in release_preprocessors():
        nb, resources = preprocessor.preprocess(nb, resources)
    nb.metadata["kernelspec"] = dict(PLAIN_KERNEL)
    nb.metadata.pop("widgets", None)
    return nb


def make_student_versions(source: str | Path = KIT_ROOT / "notebooks",
                          target: str | Path = KIT_ROOT / "dist" / "student") -> list[Path]:
    """Write the student version of every ``NN_*.ipynb`` in ``source`` to ``target`` (and copy the Markdown
    pages beside them, which the notebooks link to); returns the notebooks' paths."""
    import nbformat

    source, target = Path(source), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(source.glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        if check_markers(nb, path.name) == 0:
            raise ValueError(f"{path.name} has no exercise (no '{BEGIN}' marker).")
        out = target / path.name
        nbformat.write(student_version(nb, path.stem), out)
        written.append(out)
    if not written:
        raise FileNotFoundError(f"No notebooks named NN_*.ipynb in {source}.")
    # The pages the notebooks link to (install_a1111.md), so the links work in the student folder too.
    for page in sorted(source.glob("*.md")):
        (target / page.name).write_bytes(page.read_bytes())
    return written
