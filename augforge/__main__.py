"""``python -m augforge`` runs the command line."""

import sys

from augforge.launch import main

sys.exit(main())
