"""`skylift models` and `skylift keys` (placeholder until the registry lands)."""

from __future__ import annotations

import argparse
from typing import Any


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    return None
