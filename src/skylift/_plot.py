"""PNG figures with matplotlib's headless Agg backend: the one place that sets it up and saves atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from skylift import _atomic


def figure(ncols: int, width: float, height: float) -> tuple[Any, Any]:
    """(figure, axes[1][ncols]) on the headless backend."""
    import matplotlib

    matplotlib.use("Agg")  # headless: servers and CI have no display
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=(width, height), squeeze=False)


def save(fig: Any, path: Path) -> None:
    """Write `fig` to `path` as PNG (temp file, fsync, rename) and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    _atomic.write_with(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
