"""`python -m maskvos` runs the command-line interface."""

import sys

from maskvos.cli import main

sys.exit(main())
