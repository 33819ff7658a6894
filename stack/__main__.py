"""Entry point of ``python -m stack``."""

import logging
import sys

from stack.cli import main

logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
sys.exit(main())
