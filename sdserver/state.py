"""What the server is doing right now: the answer of GET /sdapi/v1/progress.

A1111 keeps one global ``shared.state`` that the generating thread writes and the /progress
handler reads from another thread. ``JobState`` is the same idea with a lock around it, so a
reader never sees a half-updated state (e.g. a new ``job_no`` with the old ``sampling_step``).

Example:
    >>> state = JobState()
    >>> state.snapshot()["progress"]
    0
    >>> state.begin("scripts_txt2img", job_count=2)
    >>> state.begin_batch(0, sampling_steps=10)
    >>> state.set_step(5)
    >>> round(state.snapshot()["progress"], 2)   # 0.01 + 0/2 + (5/10)/2
    0.26
    >>> state.end()
"""

from __future__ import annotations

import threading
import time


class JobState:
    """Thread-safe job state; the progress formula is A1111's (``api.progressapi``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.job = ""
        self.job_count = 0  # 0 means idle
        self.job_no = 0
        self.job_timestamp = "0"
        self.sampling_step = 0
        self.sampling_steps = 0
        self.interrupted = False
        self.skipped = False
        self.time_start = 0.0
        self.current_image = None  # a PIL image; encoded only when someone asks for it

    # --- written by the generating thread ---------------------------------------------------

    def begin(self, job: str, job_count: int) -> None:
        """Start a job. The interrupt and skip flags are reset here, as in A1111: an interrupt
        sent while the server was idle does not cancel the next job."""
        with self._lock:
            self.job = job
            self.job_count = job_count
            self.job_no = 0
            self.job_timestamp = time.strftime("%Y%m%d%H%M%S")
            self.sampling_step = 0
            self.sampling_steps = 0
            self.interrupted = False
            self.skipped = False
            self.time_start = time.time()
            self.current_image = None

    def begin_batch(self, job_no: int, sampling_steps: int, job: str | None = None) -> None:
        """Start batch ``job_no`` (0-based); a skip only ever applies to the batch it was sent in."""
        with self._lock:
            self.job_no = job_no
            self.sampling_step = 0
            self.sampling_steps = sampling_steps
            self.skipped = False
            if job is not None:
                self.job = job

    def set_step(self, step: int, preview=None) -> None:
        """Record a finished sampling step and, if given, a new preview image."""
        with self._lock:
            self.sampling_step = step
            if preview is not None:
                self.current_image = preview

    def set_preview(self, image) -> None:
        with self._lock:
            self.current_image = image

    def end(self) -> None:
        """Back to idle, as A1111's: the interrupt flag stays visible until the next job; ``job_no`` counts the
        batch that ended (A1111's ``nextjob`` after each batch: 1 after one batch) and ``sampling_steps`` keeps
        its last value (the differential test against the real A1111 compares the idle /progress)."""
        with self._lock:
            self.job = ""
            self.job_count = 0
            if self.sampling_steps:  # a batch had begun
                self.job_no += 1
            self.sampling_step = 0
            self.current_image = None

    # --- written by /interrupt and /skip, read by the generating thread ------------------------

    def interrupt(self) -> None:
        with self._lock:
            self.interrupted = True

    def skip(self) -> None:
        with self._lock:
            self.skipped = True

    def should_stop(self) -> bool:
        """True when the current batch must stop (interrupt or skip)."""
        with self._lock:
            return self.interrupted or self.skipped

    # --- read by /progress ----------------------------------------------------------------------

    def snapshot(self) -> dict:
        """Progress, ETA and state in the shape of GET /progress; ``current_image`` stays a PIL
        image (or None) so that the caller only encodes it when the client wants it."""
        with self._lock:
            state = {
                "skipped": self.skipped,
                "interrupted": self.interrupted,
                "stopping_generation": False,  # A1111's "stop after this image" (UI only)
                "job": self.job,
                "job_count": self.job_count,
                "job_timestamp": self.job_timestamp,
                "job_no": self.job_no,
                "sampling_step": self.sampling_step,
                "sampling_steps": self.sampling_steps,
            }
            if self.job_count == 0:
                return {"progress": 0, "eta_relative": 0, "state": state, "current_image": None, "textinfo": None}
            # A1111's formula: 0.01 so that a running job never reads as 0, then finished batches,
            # then the share of the current batch.
            progress = 0.01 + self.job_no / self.job_count
            if self.sampling_steps > 0:
                progress += self.sampling_step / self.sampling_steps / self.job_count
            elapsed = time.time() - self.time_start
            eta_relative = elapsed / progress - elapsed
            return {
                "progress": min(progress, 1.0),
                "eta_relative": eta_relative,
                "state": state,
                "current_image": self.current_image,
                "textinfo": None,
            }
