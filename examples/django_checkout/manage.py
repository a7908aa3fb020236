#!/usr/bin/env python
"""The shop's ``manage.py``: run it from the repository's root (``python
examples/django_checkout/manage.py ...``), so that ``examples`` is importable."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main() -> None:
    root = str(Path(__file__).resolve().parent.parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_checkout.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
