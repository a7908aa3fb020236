"""``python -m gen_durable``: the ``gen-durable`` command line."""

from __future__ import annotations

from gen_durable.cli import main

if __name__ == "__main__":
    main(prog_name="gen-durable")
