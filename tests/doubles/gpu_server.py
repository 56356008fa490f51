"""Test double for a server on leased GPUs: claims its GPUs and reports any collision.

It measures the lease, never an engine. At start it claims each physical GPU
named in ROCR_VISIBLE_DEVICES (an id, or a UUID the amd-smi double gives a GPU) with a
file in $DOUBLE_GPU_DIR; a claim held by a
live process is a collision, written to $DOUBLE_JOURNAL. It then answers
/health, /version and /v1/models like the lifecycle double, and drops its
claims on SIGTERM.

usage: python gpu_server.py PORT
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import sys
import time
from pathlib import Path

from lifecycle_server import Health


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def journal(event: dict[str, object]) -> None:
    with open(os.environ["DOUBLE_JOURNAL"], "a") as fh:
        fh.write(json.dumps({"t": time.time(), "pid": os.getpid(), **event}) + "\n")


def main() -> None:
    port = int(sys.argv[1])
    claims = Path(os.environ["DOUBLE_GPU_DIR"])
    sys.path.insert(0, str(Path(__file__).parent))
    from amd_smi import hip_uuid  # the UUIDs the amd-smi double lists

    by_uuid = {hip_uuid(i): i for i in range(64)}
    gpus = [by_uuid[g] if g in by_uuid else int(g)
            for g in os.environ.get("ROCR_VISIBLE_DEVICES", "").split(",") if g]
    mine = []
    for gpu in gpus:
        claim = claims / f"gpu-{gpu}.claim"
        try:
            holder = int(claim.read_text())
        except (OSError, ValueError):
            holder = 0
        if holder and alive(holder):
            journal({"event": "collision", "gpu": gpu, "holder": holder})
            sys.exit(5)
        claim.write_text(str(os.getpid()))
        mine.append(claim)
    journal({"event": "start", "gpus": gpus,
             "env": {k: os.environ.get(k) for k in ("ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES",
                                                    "CUDA_VISIBLE_DEVICES")}})

    def stop(signum: int, frame: object) -> None:
        for claim in mine:
            if claim.read_text() == str(os.getpid()):
                claim.unlink()
        journal({"event": "stop", "gpus": gpus})
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()


if __name__ == "__main__":
    main()
