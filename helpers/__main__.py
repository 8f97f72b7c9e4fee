"""``python -m helpers ...``: the course's command line under the name the README and students use.

It lives in course/__main__.py (``python -m course -h`` lists the commands).
"""

import sys

from course.__main__ import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m helpers"))
