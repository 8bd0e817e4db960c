"""Entry point of the `histocurate` command: exit codes and error display.

Exit codes: 0 success, 2 bad usage or input (message, no traceback), 1 failure (an
unexpected error keeps its traceback: it is a bug to report).
"""

from __future__ import annotations

import importlib
import sys

from rich.text import Text

from histocurate.cli.base import app, err_console
from histocurate.errors import UserInputError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

# Each module registers its commands on `app`; this order is the order of `--help`, the
# order of the pipeline.
COMMAND_MODULES = (
    "init", "synth", "tile", "embed", "select", "cytomine", "segment", "consensus",
    "dataset", "train", "predict", "evaluate", "demo",
)  # fmt: skip
for _module in COMMAND_MODULES:
    importlib.import_module(f"histocurate.cli.{_module}")


@app.callback()
def _root() -> None:
    """Curate a multi-pathologist nuclei dataset from H&E whole-slide images."""


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (usage errors: typer's own message, code 2)."""
    try:
        app(args=argv, prog_name="histocurate", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_FAILURE
    except UserInputError as exc:
        # Messages quote config sections like [tiling]: never read them as rich markup.
        err_console.print(Text("error: ", style="bold red") + Text(str(exc)))
        return EXIT_USAGE
    return EXIT_OK


def run() -> None:  # pragma: no cover - the console script
    sys.exit(main())
