"""Real-time inference server: KServe V2 and TF-Serving protocols, dynamic batching by rows, replicas."""

from __future__ import annotations

from skylift.serve.config import ServeConfig
from skylift.serve.server import serve

__all__ = ["ServeConfig", "serve"]
