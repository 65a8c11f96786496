"""Attacks from issue 16 against the real daemon and real peers (loopback only).

``PURPLEGW_ATTACK_SCALE`` (default 1, the CI size; ``make attack`` sets more)
multiplies the size of each attack.
"""

from __future__ import annotations

import os

SCALE = max(1, int(os.environ.get("PURPLEGW_ATTACK_SCALE", "1")))
