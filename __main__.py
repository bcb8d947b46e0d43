"""``python -m pimc``: the same command line as the ``pimc`` console script."""

import sys

from pimc.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
