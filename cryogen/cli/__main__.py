"""`python -m cryogen.cli`: the command line, as the workflow's rules call it."""

import sys

from .main import main

sys.exit(main())
