"""``python -m regionclip`` runs the command line."""

import sys

from regionclip.cli import main

sys.exit(main())
