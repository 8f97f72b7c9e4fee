"""Live progress for a running generation: a progress bar and, in a notebook, the preview image.

``client.txt2img(..., progress=True)`` feeds each ``/sdapi/v1/progress`` answer to :class:`LiveProgress` from
the cell's own thread (the request runs in a worker), so nothing is printed into other cells."""

from __future__ import annotations

from typing import Any


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where images can be displayed), False in a terminal."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _whole(value) -> int | None:
    """A non-negative whole number from a server's answer (None: absent, 0), else None for garbage.

    >>> _whole(3), _whole(None), _whole("3"), _whole(-1), _whole(True)
    (3, 0, None, None, None)
    """
    if value is None:
        return 0
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


class LiveProgress:
    """A tqdm bar of sampling steps, plus the server's live preview image in a notebook."""

    def __init__(self, total_steps: int):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=max(1, total_steps), desc="txt2img", unit="step")
        self._preview = None
        self._show_preview = in_notebook()

    def update(self, answer: Any) -> bool:
        """Move the bar to the server's step and show its preview; False (nothing changed) for an answer of
        another shape: a broken server must never stop the generation.

        >>> bar = LiveProgress(total_steps=10)
        >>> bar.update({"state": {"job_no": 0, "sampling_step": 4, "sampling_steps": 10}}), bar.bar.n
        (True, 4)
        >>> bar.update("<html>busy</html>"), bar.update({"state": {"sampling_step": "x"}}), bar.bar.n
        (False, False, 4)
        >>> bar.close()
        """
        state = answer.get("state") if isinstance(answer, dict) else None
        if not isinstance(state, dict):
            return False
        steps, job_no, step = (_whole(state.get(key)) for key in ("sampling_steps", "job_no", "sampling_step"))
        if None in (steps, job_no, step):
            return False
        done = job_no * steps + step
        if steps and done > self.bar.n:
            self.bar.update(min(done, self.bar.total) - self.bar.n)
        eta = answer.get("eta_relative")
        if isinstance(eta, (int, float)) and not isinstance(eta, bool) and 0 < eta < 10**7:
            self.bar.set_postfix_str(f"eta {eta:.0f}s", refresh=False)
        image = answer.get("current_image")
        if self._show_preview and isinstance(image, str) and image:
            self._show(image)
        return True

    def _show(self, encoded: str) -> None:
        from IPython.display import display

        from .generation import ResponseError, decode_image_b64

        try:
            image, _ = decode_image_b64(encoded, what="the live preview")
        except ResponseError:
            return  # a broken preview is not worth interrupting a generation for
        image.thumbnail((256, 256))
        if self._preview is None:
            self._preview = display(image, display_id=True)
        else:
            self._preview.update(image)

    def close(self, finished: bool = True) -> None:
        """Fill the bar when the job finished, then close it."""
        if finished and self.bar.n < self.bar.total:
            self.bar.update(self.bar.total - self.bar.n)
        self.bar.close()
