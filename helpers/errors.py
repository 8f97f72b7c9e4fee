"""One error family: every error the kit raises is a ``KitError`` that names the cause and the fix.

A notebook can catch them all at once, or just one part's subclass (``A1111Error``, ``LLMError``, ...).
Each prints what went wrong, then what to do on a line starting with ``Fix:``.

    >>> err = KitError("No A1111 answers at http://127.0.0.1:7860.", fix="start it with --api")
    >>> print(err)
    No A1111 answers at http://127.0.0.1:7860.
    Fix: start it with --api
    >>> err.message, err.fix
    ('No A1111 answers at http://127.0.0.1:7860.', 'start it with --api')
"""

from __future__ import annotations


class KitError(Exception):
    """The kit's base error: ``message`` says what happened, ``fix`` (may be empty) what to do."""

    def __init__(self, message: str = "", fix: str = ""):
        self.message, self.fix = str(message), str(fix or "")
        super().__init__(self.message)

    def __str__(self) -> str:  # written once, so every error of the kit reads the same
        return f"{self.message}\nFix: {self.fix}" if self.fix else self.message
