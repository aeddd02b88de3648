"""The image's HEALTHCHECK: /v2/health/ready with the key in $SKYLIFT_PROBE_KEY (a key with the
`predict` scope; ready needs one), else /v2/health/live, which needs none. Exit 0 when healthy."""

import os
import sys
import urllib.request

key = os.environ.get("SKYLIFT_PROBE_KEY")
port = os.environ.get("SKYLIFT_PROBE_PORT", "8000")
route = "ready" if key else "live"
request = urllib.request.Request(f"http://127.0.0.1:{port}/v2/health/{route}")
if key:
    request.add_header("Authorization", f"Bearer {key}")
try:
    with urllib.request.urlopen(request, timeout=2) as answer:
        sys.exit(0 if answer.status == 200 else 1)
except OSError:
    sys.exit(1)
