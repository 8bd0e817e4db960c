"""``python -m histocurate``: the CLI, as the ``histocurate`` command (and under torchrun:
``torchrun --nproc-per-node N -m histocurate train ...``)."""

from histocurate.cli.app import run

if __name__ == "__main__":
    run()
