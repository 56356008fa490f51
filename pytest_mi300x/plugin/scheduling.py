"""Splitting a suite across machines (``--shard i/n``) and naming its xdist groups.

A slice never splits a server group: all tests of one (engine, launched flags) land
in the same slice, so each server starts once fleet-wide.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_mi300x.engines.flags import DEFAULT_FLAGS, FlagSet
from pytest_mi300x.plugin.stash import SESSION_KEY
from pytest_mi300x.results.files import write_json_atomic

GROUPS_FILE = ".xdist-groups.json"
PERF_MARK = "mi300x"
"""Every test that starts a server carries it: the session table reports only these."""
SERVER_FIXTURE = "llm_servers"
CLAIM_MARK = "seed_claim"
"""A test that checks a seed claim on what other tests measured: it runs after them."""
CLAIM_FIXTURE = "claim_sides"
SIDES_GROUP_KEY = pytest.StashKey[str]()
"""The group a test shares with a claim that names its server as a side (merge_claim_sides)."""
TP_MARK = "tensor_parallel"
"""A test's own tensor parallelism on GPU hosts (the seed's TP for its case)."""


def test_tp(node: pytest.Item) -> int | None:
    """The TP a test's ``tensor_parallel(n)`` marker asks (the closest one), else None."""
    mark = node.get_closest_marker(TP_MARK)
    if mark is None:
        return None
    tp = mark.args[0] if mark.args else mark.kwargs.get("n")
    if isinstance(tp, bool) or not isinstance(tp, int) or tp < 1:
        raise pytest.UsageError(f"{node.nodeid}: tensor_parallel({tp!r}) is not a GPU count; "
                                "write a whole number >= 1, e.g. @pytest.mark.tensor_parallel(4)")
    return tp


def flag_set_on_host(node: pytest.Item, flag_set: FlagSet) -> FlagSet:
    """The flag set as the test runs it on this session's host: with its marker's TP on a
    GPU host (engines/served.py at_tensor_parallel)."""
    from pytest_mi300x.engines.served import at_tensor_parallel

    perf_session = node.config.stash.get(SESSION_KEY, None)
    if perf_session is None:
        return flag_set
    return at_tensor_parallel(flag_set, test_tp(node), perf_session.host)


def default_to_server_groups(config: pytest.Config) -> None:
    """-n without --dist: one xdist group per flag set keeps each server on one worker."""
    if (getattr(config.option, "dist", "no") == "load"
            and not any(a.startswith(("--dist", "-d")) for a in config.invocation_params.args)):
        config.option.dist = "loadgroup"


def worker_count(config: pytest.Config) -> int:
    """xdist workers this session runs (1 without xdist), however they were asked for:
    ``-n N`` becomes N ``popen`` execution specs, and ``--tx 2*popen`` (with ``--dist`` or
    ``-d``) names them itself; xdist distributes only with a dist mode and specs."""
    tx = getattr(config.option, "tx", None) or []
    if getattr(config.option, "dist", "no") == "no" or not tx:
        return 1
    from xdist.workermanage import parse_tx_spec_config

    return max(1, len(parse_tx_spec_config(config)))


def workers_asked(config: pytest.Config) -> str:
    """How the user asked for the workers, as they wrote it (for a refusal)."""
    numprocesses = getattr(config.option, "numprocesses", None)
    if numprocesses:
        return f"-n {numprocesses}"
    return " ".join(f"--tx {spec}" for spec in getattr(config.option, "tx", None) or [])


def gated_tests(items: list[pytest.Item]) -> int:
    """Tests that start a server and are judged against a baseline (claims are not): they
    share the session's false-alarm budget. Counted before ``--shard``: a night's budget
    covers every slice."""
    return sum(1 for item in items if SERVER_FIXTURE in getattr(item, "fixturenames", ())
               and item.get_closest_marker(CLAIM_MARK) is None)


def order_and_group(config: pytest.Config, items: list[pytest.Item], perf_session: Any) -> None:
    """Tests that share a server run back to back, so each server starts once: those of one
    flag set, and of flag sets that launch the same server (servers/shared.py); under
    xdist (--dist loadgroup) they share one worker for the same reason. ``--shard`` keeps
    this slice's groups."""
    merge_claim_sides(items)
    groups = {id(item): group_of(item) for item in items}
    first: dict[str, str] = {}  # a group sorts by the first name of its flag sets
    for item in items:
        if _flag_set(item) is not None or item.get_closest_marker(CLAIM_MARK) is None:
            name, group = str(_flag_set(item) or ""), groups[id(item)]
            first[group] = min(first.get(group, name), name)

    def order(item: pytest.Item) -> tuple[bool, str, str, bool, str]:
        claim = item.get_closest_marker(CLAIM_MARK)
        # Claim tests last: they reuse what the cases measured in this process. One that
        # measures its own workloads on one flag set runs with that set's tests instead,
        # on their server (last among them).
        own = claim is not None and "flag_set" in claim.kwargs
        group = groups[id(item)]
        return (claim is not None and not own, first.get(group, ""), group, claim is not None,
                str(_flag_set(item) or ""))

    items.sort(key=order)
    for item in items:
        item.add_marker(pytest.mark.xdist_group(group_of(item)))
        fixtures = getattr(item, "fixturenames", ())
        if SERVER_FIXTURE in fixtures or CLAIM_FIXTURE in fixtures:
            item.add_marker(PERF_MARK)
    shard = perf_session.settings.shard if perf_session is not None else None
    if shard is not None:
        kept, dropped = split(items, *shard)
        if dropped:
            config.hook.pytest_deselected(items=dropped)
        items[:] = kept
    if perf_session is not None and hasattr(config, "workerinput") and items:
        write_groups(perf_session.results_dir, items)


def _flag_set(item: pytest.Item) -> FlagSet | None:
    """The flag set a test runs with: its parameter, or its claim marker's ``flag_set``."""
    callspec = getattr(item, "callspec", None)
    params = callspec.params if callspec is not None else {}
    claim = item.get_closest_marker(CLAIM_MARK)
    found = params.get("flag_set", claim.kwargs.get("flag_set") if claim else None)
    return found if isinstance(found, FlagSet) else None


def group_of(item: pytest.Item) -> str:
    """The server a test needs, as a group name: engine and what its flag set launches
    (flag sets that launch the same server form one group); the merged group when a claim
    names that server as one of its sides."""
    return item.stash.get(SIDES_GROUP_KEY, None) or _server_group(item)


def _server_group(item: pytest.Item, engine: str | None = None,
                  flag_set: FlagSet | None = None) -> str:
    callspec = getattr(item, "callspec", None)
    if engine is None:
        engine = str((callspec.params if callspec is not None else {}).get("serving_engine",
                                                                             "vllm"))
    # Here, not at import: the engines' modules load numpy (the plugin's import must not).
    from pytest_mi300x.engines.registry import ENGINES

    flags = flag_set_on_host(item, flag_set or _flag_set(item) or DEFAULT_FLAGS)
    known = ENGINES.get(engine)  # an unknown one fails its test on its own, naming it
    return f"{engine}-{(flags.beyond(known.resolved_defaults) if known else flags).launch_label}"


def merge_claim_sides(items: list[pytest.Item]) -> None:
    """A claim that names its sides (``seed_claim(sides=[flag_set or (engine, flag_set),
    ...])``) runs in one group with every test of those sides' servers: under xdist they
    share a worker, so the claim finds the sides measured in its own process instead of
    measuring each again on another worker."""
    parent: dict[str, str] = {}

    def root(name: str) -> str:
        while parent.setdefault(name, name) != name:
            name = parent[name]
        return name

    claims: dict[int, str] = {}
    for item in items:
        claim = item.get_closest_marker(CLAIM_MARK)
        sides = claim.kwargs.get("sides") if claim is not None else None
        if not sides:
            continue
        names = [_server_group(item, *(side if isinstance(side, tuple) else ("vllm", side)))
                 for side in sides]
        for name in names:
            parent[root(name)] = root(names[0])
        claims[id(item)] = names[0]
    members: dict[str, list[str]] = {}
    for name in parent:
        members.setdefault(root(name), []).append(name)
    for item in items:
        base = claims.get(id(item)) or _server_group(item)
        if base in parent:
            together = sorted(members[root(base)])
            item.stash[SIDES_GROUP_KEY] = f"{together[0]}+{len(together) - 1}"


def split(items: list[pytest.Item], index: int, total: int
          ) -> tuple[list[pytest.Item], list[pytest.Item]]:
    """(kept, dropped) for slice ``index`` of ``total`` (1-based).

    Groups are dealt round-robin in name order, so every slice of the same
    collection agrees on the split and sizes differ by at most one group.
    """
    groups = sorted({group_of(item) for item in items})
    mine = {g for k, g in enumerate(groups) if k % total == index - 1}
    kept = [item for item in items if group_of(item) in mine]
    dropped = [item for item in items if group_of(item) not in mine]
    return kept, dropped


def strip_group(nodeid: str, item: pytest.Item) -> str:
    """The test id without the ``@group`` suffix xdist's loadgroup mode appends."""
    suffix = f"@{group_of(item)}"
    return nodeid.removesuffix(suffix)


def write_groups(results_dir: Path, items: list[pytest.Item]) -> None:
    """Worker side: publish each test's server group for the controller's scheduler."""
    write_json_atomic(results_dir / GROUPS_FILE, {item.nodeid: group_of(item) for item in items})


def make_group_scheduler(config: pytest.Config, log: Any, results_dir: Path) -> Any:
    """An xdist scheduler that sends each server group to one worker.

    xdist's own ``loadgroup`` renames node ids (``item._nodeid``), which pytest
    9.2 no longer reads, so its groups are lost; this reads them from the file
    the workers wrote at collection instead. A crashed worker's group goes to
    its replacement (xdist runs the crashed test again there).
    """
    from xdist.scheduler import LoadScopeScheduling

    class ServerGroupScheduling(LoadScopeScheduling):  # type: ignore[misc]
        _groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self._groups is None:
                try:
                    self._groups = json.loads((results_dir / GROUPS_FILE).read_text())
                except (OSError, ValueError):
                    return nodeid
            return self._groups.get(nodeid, nodeid)

        def _reschedule(self, node: Any) -> None:
            # After a crash xdist requeues every group of the dead worker, finished
            # ones too; sent on, a finished group is an empty batch its new worker
            # never reports back on, and the run waits forever.
            for scope in [k for k, unit in self.workqueue.items() if all(unit.values())]:
                del self.workqueue[scope]
            super()._reschedule(node)
            # Workers run their last queued test only once told there is no more.
            if not self.workqueue and not node.shutting_down:
                node.shutdown()

    return ServerGroupScheduling(config, log)
