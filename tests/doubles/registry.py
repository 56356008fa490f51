"""TEST DOUBLE of `docker manifest inspect --verbose REF` against a registry: the images it
knows are in $REGISTRY_DOUBLE_IMAGES (a JSON file {"repo:tag": "sha256:..."}); every call is
appended to $REGISTRY_DOUBLE_IMAGES.calls. An unknown image answers as docker does ("no such
manifest", exit 1). Installed on PATH as `docker` by tests (tests/doubles/__init__.py)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    images_file = Path(os.environ["REGISTRY_DOUBLE_IMAGES"])
    with open(str(images_file) + ".calls", "a") as fh:
        fh.write(" ".join(argv) + "\n")
    if argv[:2] != ["manifest", "inspect"]:
        print(f"registry double: only `docker manifest inspect` is doubled, not {argv}",
              file=sys.stderr)
        return 2
    ref = argv[-1]
    images = json.loads(images_file.read_text())
    if ref not in images:
        print(f"no such manifest: docker.io/{ref}", file=sys.stderr)
        return 1
    repo = ref.rsplit(":", 1)[0]
    print(json.dumps({
        "Ref": f"docker.io/{repo}@{images[ref]}",
        "Descriptor": {"mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                       "digest": images[ref], "size": 1570,
                       "platform": {"architecture": "amd64", "os": "linux"}},
        "SchemaV2Manifest": {"schemaVersion": 2, "config": {"digest": "sha256:" + "c" * 64}},
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
