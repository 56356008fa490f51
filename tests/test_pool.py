"""ServerPool policy (reuse, restart, eviction, failure caching) on the lifecycle test double."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from pytest_mi300x.engines.base import LaunchSpec
from pytest_mi300x.engines.flags import DEFAULT_FLAGS, FlagSet
from pytest_mi300x.servers.pool import ServerPool
from pytest_mi300x.servers.process import ServerError, ServerExited

DOUBLE = Path(__file__).parent / "doubles" / "lifecycle_server.py"


@dataclass(frozen=True)
class DoubleEngine:
    """Engine test double: launches the lifecycle double in ``mode``."""

    mode: str = "serve"
    name: str = "double"

    def command(self, spec: LaunchSpec) -> list[str]:
        return [sys.executable, str(DOUBLE), self.mode, str(spec.port)]

    def environment(self, spec: LaunchSpec) -> dict[str, str]:
        return {"VLLM_API_KEY": spec.api_key, "DOUBLE_FLAGS": " ".join(spec.flag_set.to_argv())}

    @property
    def health_path(self) -> str:
        return "/health"

    def version(self, base_url: str, api_key: str) -> str:
        return "0.0-double"

    def skip_reason(self, flag_set: FlagSet, version: str) -> str | None:
        return None

    def cleanup_argv(self, spec: LaunchSpec) -> list[str] | None:
        return None

    def refusal(self, log_tail: str) -> str | None:
        return None

    auth_probe = ("GET", "/v1/models")


def spec_for(flag_set: FlagSet = DEFAULT_FLAGS):
    def make(host: str, port: int) -> LaunchSpec:
        return LaunchSpec(model="m", served_model_name="m", host=host, port=port,
                          api_key="secret-key", flag_set=flag_set)
    return make


@pytest.fixture
def pool(tmp_path: Path):
    with ServerPool(tmp_path, max_servers=1, start_timeout=30) as p:
        yield p


def test_same_key_reuses_the_server(pool: ServerPool) -> None:
    a = pool.acquire("k", DoubleEngine(), spec_for())
    b = pool.acquire("k", DoubleEngine(), spec_for())
    assert a is b and a.generation == 1
    assert a.spec.host == "127.0.0.1"


def test_dead_server_is_replaced_by_a_new_one(pool: ServerPool) -> None:
    first = pool.acquire("k", DoubleEngine(), spec_for())
    os.killpg(first.process.pid, signal.SIGKILL)
    deadline = time.monotonic() + 60  # until it is gone, not a fixed sleep racing the kill
    while first.process.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    with pytest.raises(ServerExited, match="died during the test"):
        first.check_alive("during the test")
    second = pool.acquire("k", DoubleEngine(), spec_for())
    assert second.generation == 2 and second.process.alive()
    assert second.process.log_path != first.process.log_path


def test_capacity_evicts_the_oldest(pool: ServerPool) -> None:
    a = pool.acquire("a", DoubleEngine(), spec_for(FlagSet("a")))
    b = pool.acquire("b", DoubleEngine(), spec_for(FlagSet("b")))
    assert not a.process.alive() and b.process.alive()


def test_failed_start_fails_again_at_once(pool: ServerPool, tmp_path: Path) -> None:
    with pytest.raises(ServerExited, match="simulated engine failure"):
        pool.acquire("bad", DoubleEngine("crash"), spec_for())
    logs = sorted(tmp_path.rglob("*"))
    with pytest.raises(ServerExited, match="same start failure"):
        pool.acquire("bad", DoubleEngine("crash"), spec_for())
    assert sorted(tmp_path.rglob("*")) == logs  # at once: no second start, no new log


def test_description_redacts_the_api_key(pool: ServerPool) -> None:
    server = pool.acquire("k", DoubleEngine(), spec_for(FlagSet.of("x", max_num_seqs=4)))
    described = server.describe()
    assert described["env"]["VLLM_API_KEY"] == "<redacted>"
    assert "secret-key" not in repr(described)
    assert described["flag_set"]["argv"] == ["--max-num-seqs", "4"]


def test_close_stops_everything(tmp_path: Path) -> None:
    pool = ServerPool(tmp_path, max_servers=2, start_timeout=30)
    a = pool.acquire("a", DoubleEngine(), spec_for(FlagSet("a")))
    b = pool.acquire("b", DoubleEngine(), spec_for(FlagSet("b")))
    pool.close()
    assert not a.process.alive() and not b.process.alive()


def test_a_server_that_does_not_serve_the_model_name_is_refused(pool: ServerPool) -> None:
    def other_name(host: str, port: int) -> LaunchSpec:
        return LaunchSpec(model="m", served_model_name="llama-3.1-70b", host=host, port=port,
                          api_key="k", flag_set=DEFAULT_FLAGS)
    with pytest.raises(ServerError, match=r"serves \['m'\], not 'llama-3.1-70b'") as exc:
        pool.acquire("named", DoubleEngine(), other_name)
    assert "double starting" in exc.value.log_tail
    assert pool._live == {}  # nothing left running


def test_a_group_of_instances_is_kept_together_past_max_servers(pool: ServerPool) -> None:
    other = pool.acquire("other", DoubleEngine(), spec_for())
    group = pool.acquire_group(["g-1", "g-2"], DoubleEngine(), spec_for())
    assert not other.process.alive()  # made room for the group
    assert all(s.process.alive() for s in group)  # max_servers 1, and both stay up
    assert len({s.base_url for s in group}) == 2
    again = pool.acquire_group(["g-1", "g-2"], DoubleEngine(), spec_for())
    assert [s.process.pid for s in again] == [s.process.pid for s in group]  # reused
    single = pool.acquire("single", DoubleEngine(), spec_for())
    assert single.process.alive() and not any(s.process.alive() for s in group)


def test_a_server_dying_as_its_streams_are_cut_is_seen_dead_within_the_grace(
        pool: ServerPool) -> None:
    # Streams cut by a killed engine reach the client before its exit can be collected
    # (on a slow machine, long before): with a grace the check waits for that exit.
    server = pool.acquire("k", DoubleEngine(), spec_for())
    threading.Timer(0.5, os.killpg, (server.process.pid, signal.SIGKILL)).start()
    with pytest.raises(ServerExited, match="died during the measured run"):
        server.check_alive("during the measured run", grace_s=120)
    # A server that lives on passes the check once the grace is over.
    again = pool.acquire("k", DoubleEngine(), spec_for())
    again.check_alive("during the measured run", grace_s=0.2)
    assert again.process.alive()
