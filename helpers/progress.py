"""Live progress for a running generation: a progress bar and, in a notebook, the preview image.

The client polls A1111's ``/sdapi/v1/progress`` while the txt2img request runs in a worker
thread, and feeds each answer to :class:`LiveProgress`. All drawing happens in the thread that
called ``txt2img`` (the notebook cell's own thread), so nothing is printed into other cells.

Example (what ``client.txt2img(..., progress=True)`` does for you):
    >>> bar = LiveProgress(total_steps=20)                        # doctest: +SKIP
    >>> bar.update(client.progress())                             # doctest: +SKIP
    >>> bar.close()                                               # doctest: +SKIP
"""

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


class LiveProgress:
    """A tqdm bar of sampling steps, plus the server's live preview image in a notebook."""

    def __init__(self, total_steps: int, show_preview: bool = True, description: str = "txt2img"):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=max(1, total_steps), desc=description, unit="step")
        self._preview = None
        self._show_preview = show_preview and in_notebook()

    def update(self, answer: dict[str, Any]) -> None:
        """Move the bar to the step the server reports and show its preview image, if any."""
        state = answer.get("state") or {}
        steps = int(state.get("sampling_steps") or 0)
        done = int(state.get("job_no") or 0) * steps + int(state.get("sampling_step") or 0)
        if steps and done > self.bar.n:
            self.bar.update(min(done, self.bar.total) - self.bar.n)
        eta = answer.get("eta_relative")
        if eta:
            self.bar.set_postfix_str(f"eta {eta:.0f}s", refresh=False)
        if self._show_preview and answer.get("current_image"):
            self._show(answer["current_image"])

    def _show(self, encoded: str) -> None:
        from IPython.display import display

        from .generation import ResponseError, decode_image_b64

        try:
            image, _ = decode_image_b64(encoded)
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
