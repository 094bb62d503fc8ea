"""``python -m c2lite``: the c2lite command line (see :mod:`c2lite.cli`)."""
from c2lite.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
