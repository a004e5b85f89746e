"""`python -m ptrain` and `accelerate launch -m ptrain` enter here."""

import sys

from ptrain.cli import main

if __name__ == "__main__":
    sys.exit(main())
