"""User-facing errors.

Anything a user can cause (a missing file, a wrong format, a bad model directory) raises
`InputError` with a one-line message; the command-line entry points turn it into that line on
stderr and exit code 2 (`cli_main`).
"""

import sys


class InputError(ValueError):
  """Bad user input: the message is shown as is, on one line."""


EXIT_BAD_INPUT = 2


def cli_main(main_fn):
  """Runs `main_fn()`; an `InputError` becomes `error: <message>` on stderr and exit 2."""
  try:
    return main_fn()
  except InputError as e:
    msg = " ".join(str(e).split())
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)
