"""``make demo`` runs the README's Checkout example end to end: run it as a user would."""

from __future__ import annotations

import os
import subprocess
import sys

from _support.helpers import ROOT


def test_checkout_demo_goes_start_awaiting_ship_done(db_url: str) -> None:
    env = {**os.environ, "GEN_DURABLE_DSN": db_url}
    out = subprocess.run(
        [sys.executable, "-m", "examples.checkout_demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    steps = [line for line in lines if "step '" in line]
    assert "step 'start'" in steps[0] and "awaiting payment_confirmed" in steps[0]
    assert "step 'ship'" in steps[1] and "done" in steps[1]
    assert "order:42 is done" in lines[-1]
