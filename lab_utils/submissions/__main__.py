"""``python -m lab_utils.submissions``: the command line (``render.sh --submissions``) and
its workers (``--one -``)."""
import sys

from .cli import main

sys.exit(main(hide_paths=True))
