"""``python -m runner ...`` (from the pack folder) or ``python -m <pack>.runner ...`` (pack folder name without a
hyphen, from its parent folder)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
