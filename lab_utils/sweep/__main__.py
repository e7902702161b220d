"""``python -m lab_utils.sweep``: the command line (``render.sh --sweep FILE``)."""
import sys

from .cli import main

sys.exit(main())
