"""``python -m cxrlib`` is the ``cxr`` command."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
