"""``python -m ppml_image`` and the ``ppml-image`` console script run the CLI.

The signal handlers are set before anything else is imported: a Ctrl-C
during start-up (typer, click and the command modules take a tenth of a
second to import) then ends the program with one line, not a traceback.
"""

import sys

from ppml_image import _signals


def main() -> None:
    """Console-script entry point."""
    _signals.exit_on_signal(json="--json" in sys.argv[1:])
    from ppml_image.cli import main as cli_main

    try:
        cli_main()
    finally:
        # The outcome is decided and printed. Python's shutdown puts the
        # default SIGINT/SIGTERM actions back, so a signal now would kill the
        # process and hide that outcome's exit code (-2 instead of 0 or 130).
        _signals.ignore_from_now()


if __name__ == "__main__":
    main()
