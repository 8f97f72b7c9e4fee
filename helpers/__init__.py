"""helpers: the small shared module the course notebooks import.

Importing ``helpers`` is cheap on purpose: it loads no torch, open_clip or openai, so the
API notebooks start in well under a second. Import the part you need:

    >>> from helpers.a1111 import A1111Client          # doctest: +SKIP
    >>> from helpers.config import load_settings
"""

__version__ = "0.1.0"
