"""TEST DOUBLE for the `docker` command: containers as local processes, so a real server
answers on a machine without a docker daemon.

Installed on PATH as `docker` by tests (see tests/containers.py). Every call is appended
to $DOCKER_DOUBLE_STATE/journal.jsonl; each container's state is a file
$DOCKER_DOUBLE_STATE/containers/NAME.json. What it does:

- `run [OPTIONS] IMAGE [ARG...]`: the container's command (`--entrypoint` and the args)
  runs as a local process in a session of its own, so it outlives a SIGKILLed client as
  a container does. It gets only the image's env (PATH, HOME, XDG_CACHE_HOME, TMPDIR,
  LANG of the client) plus the `-e NAME` / `-e NAME=VALUE` variables, as in docker.
  `--host 0.0.0.0` in its args becomes 127.0.0.1: the double publishes on loopback only,
  and `-p` must publish on 127.0.0.1. The client waits for it in the foreground and
  forwards SIGTERM / SIGINT (docker's sig-proxy) unless `--sig-proxy=false` or
  $DOCKER_DOUBLE_SIG_PROXY=0; `--rm` forgets the container when it exits. A name in use
  by a running container is a conflict (exit 125), as in docker.
- `rm -f NAME`: SIGKILL to the container's process group; `stop [-t N] NAME`: SIGTERM,
  then SIGKILL after N s (default 10). Both print NAME; an unknown name exits 1.
- `ps [-a] [--filter label=KEY[=VALUE]] --format '{{json .}}'`: one JSON line per
  container with ID, Names, Image, Labels ("k=v,k=v") and State.
- `pull REF`: the registry's current digest of REF becomes the local image's
  ($DOCKER_DOUBLE_REMOTE, JSON {ref: digest hex}, says what the registry holds: changing it
  between two pulls is a tag that moved overnight; default a digest made from the name).
  `image inspect REF` answers the last pulled (Id, RepoDigests `repo@sha256:...`, and
  Config.Env) and fails for an image never pulled, as docker does; a `repo@sha256:...`
  reference is its own digest.
- The image's own env ($DOCKER_DOUBLE_IMAGE_ENV, JSON; default HIP_FORCE_DEV_KERNARG=1, as
  ROCm's vLLM image sets it) reaches every container before its `-e` variables.
- `info --format '{{.DockerRootDir}}'`: the state folder.

$DOCKER_DOUBLE_ENTRYPOINTS (JSON {"python3": "/path/to/python"}) maps the image's
executables to local ones wherever they appear in the container's command (the engine venv
stands in for the image; `nice -n 10 python3 ...` runs the venv's python under nice).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RUN_VALUE_OPTIONS = {"--name", "--label", "-e", "--env", "-v", "--volume", "-p", "--publish",
                     "--device", "--group-add", "--security-opt", "--cap-add", "--shm-size",
                     "--entrypoint", "--gpus", "--ipc", "--network", "--user", "-w",
                     "--workdir", "--sig-proxy"}
RUN_FLAGS = {"--rm", "--init", "-d", "--detach", "-i", "-t", "--privileged"}
IMAGE_ENV = ("PATH", "HOME", "XDG_CACHE_HOME", "TMPDIR", "LANG")


def state_dir() -> Path:
    path = Path(os.environ["DOCKER_DOUBLE_STATE"])
    (path / "containers").mkdir(parents=True, exist_ok=True)
    return path


def journal(event: dict[str, Any]) -> None:
    with (state_dir() / "journal.jsonl").open("a") as fh:
        fh.write(json.dumps({"t": time.time(), "client_pid": os.getpid(), **event}) + "\n")


def start_time(pid: int) -> str | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def container_path(name: str) -> Path:
    return state_dir() / "containers" / f"{name}.json"


def load(name: str) -> dict[str, Any] | None:
    try:
        return json.loads(container_path(name).read_text())
    except (OSError, ValueError):
        return None


def running(doc: dict[str, Any]) -> bool:
    return start_time(int(doc["pid"])) == doc["start"]


def fail(message: str, code: int = 1) -> int:
    print(message, file=sys.stderr)
    return code


def parse_run(args: list[str]) -> tuple[dict[str, list[str]], set[str], str, list[str]]:
    """(options with values, flags, image, command args)."""
    values: dict[str, list[str]] = {}
    flags: set[str] = set()
    i = 0
    while i < len(args) and args[i].startswith("-"):
        arg = args[i]
        key, eq, inline = arg.partition("=")
        if key in RUN_VALUE_OPTIONS:
            if eq:
                values.setdefault(key, []).append(inline)
            else:
                i += 1
                values.setdefault(key, []).append(args[i])
        elif arg in RUN_FLAGS:
            flags.add(arg)
        else:
            raise SystemExit(fail(f"docker double: unknown flag: {arg}", 125))
        i += 1
    if i >= len(args):
        raise SystemExit(fail('"docker run" requires at least 1 argument.', 125))
    return values, flags, args[i], args[i + 1:]


def run(args: list[str]) -> int:
    values, flags, image, rest = parse_run(args)
    name = (values.get("--name") or [f"double-{os.getpid()}"])[-1]
    existing = load(name)
    if existing is not None and running(existing):
        return fail(f'docker: Error response from daemon: Conflict. The container name '
                    f'"/{name}" is already in use.', 125)
    for publish in values.get("-p", []) + values.get("--publish", []):
        if not publish.startswith("127.0.0.1:"):
            return fail(f"docker double: refusing to publish {publish!r} beyond loopback", 125)
    entrypoint = values.get("--entrypoint", [None])[-1]
    argv = [entrypoint, *rest] if entrypoint else list(rest)
    if not argv:
        return fail("docker double: the image has no default command", 125)
    mapping = json.loads(os.environ.get("DOCKER_DOUBLE_ENTRYPOINTS", "{}"))
    argv = [mapping.get(a, a) for a in argv]
    argv = ["127.0.0.1" if a == "0.0.0.0" and i and argv[i - 1] == "--host" else a
            for i, a in enumerate(argv)]
    env = {k: os.environ[k] for k in IMAGE_ENV if k in os.environ}
    env.update(image_env())
    for item in values.get("-e", []) + values.get("--env", []):
        key, eq, value = item.partition("=")
        if eq:
            env[key] = value
        elif key in os.environ:
            env[key] = os.environ[key]
    labels = dict(item.partition("=")[::2] for item in values.get("--label", []))
    detached = "-d" in flags or "--detach" in flags
    # Detached, its output goes to a log (as `docker logs` keeps it), never to the client's.
    out = (state_dir() / "containers" / f"{name}.log").open("ab") if detached else None
    proc = subprocess.Popen(argv, env=env, start_new_session=True, stdin=subprocess.DEVNULL,
                            stdout=out, stderr=out)
    doc = {"name": name, "id": hashlib.sha256(f"{name}{proc.pid}".encode()).hexdigest()[:12],
           "pid": proc.pid, "start": start_time(proc.pid), "image": image, "labels": labels,
           "rm": "--rm" in flags}
    container_path(name).write_text(json.dumps(doc))
    journal({"event": "run", "name": name, "image": image, "labels": labels, "argv": argv,
             "env": env, "docker_argv": ["run", *args], "pid": proc.pid})
    if detached:
        print(doc["id"])
        return 0
    proxy = (values.get("--sig-proxy", ["true"])[-1] != "false"
             and os.environ.get("DOCKER_DOUBLE_SIG_PROXY", "1") != "0")

    def forward(signum: int, frame: object) -> None:
        if proxy:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signum)
        else:
            os._exit(128 + signum)  # the client dies; the container runs on

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    code = proc.wait()
    if doc["rm"]:
        with contextlib.suppress(OSError):
            container_path(name).unlink()
    return code


def kill(name: str, grace: float | None) -> int:
    doc = load(name)
    if doc is None:
        return fail(f"Error response from daemon: No such container: {name}")
    pid = int(doc["pid"])
    if running(doc):
        if grace is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while running(doc) and time.monotonic() < deadline:
                time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        while running(doc):
            time.sleep(0.02)
    if grace is None or doc["rm"]:
        with contextlib.suppress(OSError):
            container_path(name).unlink()
    print(name)
    return 0


def ps(args: list[str]) -> int:
    show_all = "-a" in args or "--all" in args
    filters = [args[i + 1] for i, a in enumerate(args) if a == "--filter"]
    fmt = args[args.index("--format") + 1] if "--format" in args else None
    if fmt != "{{json .}}":
        return fail("docker double: ps supports only --format '{{json .}}'", 2)
    for path in sorted((state_dir() / "containers").glob("*.json")):
        doc = json.loads(path.read_text())
        alive = running(doc)
        if not alive and doc["rm"]:
            path.unlink()  # docker's daemon removes a --rm container when it exits
            continue
        if not (alive or show_all):
            continue
        wanted = [f.removeprefix("label=") for f in filters if f.startswith("label=")]
        if not all(w in doc["labels"] or w in {f"{k}={v}" for k, v in doc["labels"].items()}
                   for w in wanted):
            continue
        print(json.dumps({"ID": doc["id"], "Names": doc["name"], "Image": doc["image"],
                          "Labels": ",".join(f"{k}={v}" for k, v in doc["labels"].items()),
                          "State": "running" if alive else "exited"}))
    return 0


def image_env() -> dict[str, str]:
    return json.loads(os.environ.get("DOCKER_DOUBLE_IMAGE_ENV", '{"HIP_FORCE_DEV_KERNARG": "1"}'))


def repo_of(ref: str) -> str:
    name = ref.split("@", 1)[0]
    head, _, tail = name.rpartition("/")
    return f"{head}/{tail.split(':', 1)[0]}" if head else tail.split(":", 1)[0]


def images() -> dict[str, str]:
    path = state_dir() / "images.json"
    return json.loads(path.read_text()) if path.exists() else {}


def pull(ref: str) -> int:
    remote = json.loads(os.environ.get("DOCKER_DOUBLE_REMOTE", "{}"))
    digest = ref.partition("@sha256:")[2] or remote.get(ref) \
        or hashlib.sha256(ref.encode()).hexdigest()
    local = {**images(), ref: digest}
    (state_dir() / "images.json").write_text(json.dumps(local))
    print(f"{ref}: Pulled sha256:{digest}")
    return 0


def inspect(ref: str) -> int:
    digest = ref.partition("@sha256:")[2] or images().get(ref)
    if digest is None:
        return fail(f"Error response from daemon: No such image: {ref}")
    print(json.dumps([{"Id": f"sha256:{hashlib.sha256(digest.encode()).hexdigest()}",
                       "RepoDigests": [f"{repo_of(ref)}@sha256:{digest}"],
                       "Config": {"Env": [f"{k}={v}" for k, v in image_env().items()]}}]))
    return 0


def main() -> int:
    args = sys.argv[1:]
    journal({"event": "call", "argv": args})
    if args[:1] == ["run"]:
        return run(args[1:])
    if args[:2] == ["rm", "-f"] and len(args) == 3:
        return kill(args[2], None)
    if args[:1] == ["stop"]:
        grace = float(args[args.index("-t") + 1]) if "-t" in args else 10.0
        return kill(args[-1], grace)
    if args[:1] == ["ps"]:
        return ps(args[1:])
    if args[:2] == ["image", "inspect"] and len(args) == 3:
        return inspect(args[2])
    if args[:1] == ["pull"] and len(args) == 2:
        return pull(args[1])
    if args[:2] == ["info", "--format"]:
        print(state_dir())
        return 0
    return fail(f"docker double: unsupported arguments {args}", 2)


if __name__ == "__main__":
    sys.exit(main())
