"""The `histocurate` command line: one module per stage command, all on one typer app."""
