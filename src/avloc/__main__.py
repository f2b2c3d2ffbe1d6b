"""``python -m avloc``: the CLI, also under ``torchrun --nproc-per-node N -m avloc train ...``."""

from avloc.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
