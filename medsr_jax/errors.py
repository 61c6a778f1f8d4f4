"""User-facing errors.

Anything a user can cause (a missing file, a wrong format, a bad model directory) raises
`InputError` with a one-line message; the command-line entry points turn it into that line on
stderr and exit code 2 (`cli_main`).
"""

import os
import sys


class InputError(ValueError):
  """Bad user input: the message is shown as is, on one line."""


class DiskFull(InputError):
  """A write failed for want of room (or of a writable disk). The command ends at once after its
  one line: background writers (orbax's asynchronous checkpointing, its event loop) would only
  add their own failures of the same cause to stderr while the interpreter shuts down."""


EXIT_BAD_INPUT = 2


def end_at_once(code: int) -> None:
  """Ends the process now (no interpreter shutdown, whose background threads would print)."""
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)  # pylint: disable=protected-access


def cli_main(main_fn):
  """Runs `main_fn()`; an `InputError` becomes `error: <message>` on stderr and exit 2."""
  try:
    return main_fn()
  except InputError as e:
    msg = " ".join(str(e).split())
    print(f"error: {msg}", file=sys.stderr)
    if isinstance(e, DiskFull):
      end_at_once(EXIT_BAD_INPUT)
    sys.exit(EXIT_BAD_INPUT)
