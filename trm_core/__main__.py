"""`python -m trm_core ...` is the `trm` command (for a machine where the console script is not on PATH)."""

import sys

from trm_core.cli import main

sys.exit(main())
