"""``python -m vdeplug`` is ``vde_plug``."""

import sys

from .cli import main

sys.exit(main())
