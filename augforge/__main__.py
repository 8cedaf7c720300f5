"""``python -m augforge`` runs the command line."""

import sys

from augforge.cli import main

sys.exit(main())
