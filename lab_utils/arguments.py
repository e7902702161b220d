"""What the kit's command lines share: a parser whose usage errors are one line, and the
parser of a whole number of at least 1 (``--jobs``, timeouts in seconds)."""
from __future__ import annotations

import argparse


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, no usage dump or traceback
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def positive_int(flag: str):
    """An argparse ``type`` for *flag*: a whole number >= 1, else a one-line message naming it."""
    def parse(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be a whole number (got {text!r})")
        if v < 1:
            raise argparse.ArgumentTypeError(f"{flag} must be at least 1 (got {v})")
        return v
    return parse
