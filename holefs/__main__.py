"""`python -m holefs` is the holefs command."""

import sys

from .cli import main

sys.exit(main())
