"""``python -m helpers ...``: the course's command line (course/__main__.py; ``python -m course -h`` lists it)."""

import sys

from course.__main__ import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m helpers"))
