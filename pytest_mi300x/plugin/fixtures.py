"""Fixtures: thin wrappers over the session's server pool and the measurer.

Override ``serving_engine``, ``served_model`` or ``flag_set`` in a conftest, or
parametrize them on a test, to choose what a test runs against.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

from pytest_mi300x.engines.flags import DEFAULT_FLAGS, FlagSet
from pytest_mi300x.plugin import benchmark
from pytest_mi300x.plugin.scheduling import flag_set_on_host, strip_group
from pytest_mi300x.plugin.stash import (
    MEASURER_KEY,
    PROGRESS_KEY,
    SERVER_KEY,
    SERVERS_KEY,
    SESSION_KEY,
)

if TYPE_CHECKING:  # imported when a fixture runs: collection stays cheap
    from pytest_mi300x.load.measurer import Measurer, PerfResult
    from pytest_mi300x.plugin.claims import ClaimSides
    from pytest_mi300x.servers.endpoint import Endpoint
    from pytest_mi300x.servers.pool import RunningServer
    from pytest_mi300x.session import PerfSession
    from pytest_mi300x.workload.datasets import Dataset
    from pytest_mi300x.workload.workload import Workload


@pytest.fixture(scope="session")
def mi300x_session(pytestconfig: pytest.Config) -> PerfSession:
    """The plugin's session object (host, engine install, server pool)."""
    return pytestconfig.stash[SESSION_KEY]


DEFAULT_ENGINE = "vllm"
DEFAULT_MODEL = "llama-3.1-70b"


@pytest.fixture
def serving_engine() -> str:
    """Which engine serves the test; override or parametrize (``vllm``, ``tgi``)."""
    return DEFAULT_ENGINE


@pytest.fixture
def served_model() -> str:
    """Logical model name; each host maps it to what it really serves."""
    return DEFAULT_MODEL


@pytest.fixture
def flag_set() -> FlagSet:
    """Engine flags for the test; parametrize with ``pytest_mi300x.flag_sets(...)``."""
    return DEFAULT_FLAGS


@pytest.fixture(scope="session")
def sharegpt_dataset(mi300x_session: PerfSession) -> Callable[..., Dataset]:
    """Makes ShareGPT workloads: from ``--sharegpt FILE`` with vLLM's filtering, else
    the seeded look-alike (SyntheticShareGPT). Call it as ``sharegpt_dataset(num_prompts)``."""
    return sharegpt_maker(mi300x_session)


def sharegpt_maker(mi300x_session: PerfSession) -> Callable[..., Dataset]:
    """What ``sharegpt_dataset`` hands out (the plan's dry run makes the same)."""
    from pytest_mi300x.workload.sharegpt import ShareGPTDataset, SyntheticShareGPT

    path = mi300x_session.settings.sharegpt_path

    def make(num_prompts: int, seed: int = 0) -> Dataset:
        if path is not None:
            return ShareGPTDataset(path, num_prompts, seed=seed)
        return SyntheticShareGPT(num_prompts, seed=seed, length_seed=seed)

    return make


@pytest.fixture
def server_instances() -> int:
    """How many servers of the flag set serve the test (default 1); parametrize it (e.g.
    2: the guide's "two TP-4 instances") and ``perf`` sends each request to one of them
    in turn, with figures over all requests."""
    return 1


@pytest.fixture
def llm_servers(request: pytest.FixtureRequest, mi300x_session: PerfSession,
                serving_engine: str, served_model: str, flag_set: FlagSet,
                server_instances: int) -> Iterator[list[RunningServer | Endpoint]]:
    """``server_instances`` ready servers for (engine, model, flag set), shared with every
    test that asks the same; on GPU hosts each leases its own GPUs. With ``--endpoint``,
    that endpoint (tests needing a server of their own skip)."""
    wanted = tuple(a for m in request.node.iter_markers("accelerator") for a in m.args)
    flag_set = flag_set_on_host(request.node, flag_set)  # the seed's TP for the case
    reason = mi300x_session.unavailable(serving_engine, flag_set, wanted, served_model,
                                        instances=server_instances)
    if reason:
        pytest.skip(reason)
    from pytest_mi300x.hosts.profile import HostConfigError

    try:
        engine = mi300x_session.engine(serving_engine)
    except HostConfigError as exc:
        # A build this host cannot run fails every test alike: stop once, in one line.
        pytest.exit(f"pytest-mi300x: {exc}", returncode=pytest.ExitCode.USAGE_ERROR)
    reason = engine.skip_reason(flag_set, mi300x_session.engine_version(serving_engine))
    if reason:
        pytest.skip(reason)
    from pytest_mi300x.engines.base import EngineUnsupported
    from pytest_mi300x.servers.process import ServerError

    servers: list[RunningServer | Endpoint] = []
    try:
        servers = mi300x_session.servers(serving_engine, served_model, flag_set,
                                         server_instances)
    except ServerError as exc:
        refused = engine.refusal(exc.log_tail)
        if refused:
            pytest.skip(refused)
        raise
    except EngineUnsupported as exc:  # a build that forces a setting the set turns off
        mi300x_session.pool.idle()
        pytest.skip(str(exc))
    try:
        request.node.stash[SERVER_KEY] = servers[0]
        request.node.stash[SERVERS_KEY] = servers
        yield servers
    finally:
        mi300x_session.pool.idle()


@pytest.fixture
def llm_server(llm_servers: list[RunningServer | Endpoint]) -> RunningServer | Endpoint:
    """A ready server for (engine, model, flag set), shared with every test that asks the
    same (the first instance when ``server_instances`` is more than 1)."""
    return llm_servers[0]


@pytest.fixture
def perf(request: pytest.FixtureRequest, mi300x_session: PerfSession,
         llm_server: RunningServer | Endpoint, llm_servers: list[RunningServer | Endpoint],
         served_model: str) -> Iterator[Measurer]:
    """Drives workloads at ``llm_server`` (at every instance in turn when there are
    several) and records figures: ``perf.run(Workload(...))``."""
    from pytest_mi300x.engines.base import EngineUnsupported

    floor_marks = [m.kwargs for m in request.node.iter_markers("perf_floor")]
    floors = {k: float(v) for kwargs in reversed(floor_marks) for k, v in kwargs.items()}
    try:
        measurer = mi300x_session.measurer(
            llm_server, strip_group(request.node.nodeid, request.node), served_model,
            floors=floors, progress=request.config.stash.get(PROGRESS_KEY, None),
            servers=llm_servers)
    except EngineUnsupported as exc:
        pytest.skip(str(exc))
    bench = benchmark.fixture_for(request)
    request.node.stash[MEASURER_KEY] = measurer
    yield measurer
    if bench is not None:
        benchmark.record(bench, measurer)


@pytest.fixture
def claim_sides(request: pytest.FixtureRequest, mi300x_session: PerfSession,
                served_model: str) -> Iterator[ClaimSides]:
    """For claim tests (``@pytest.mark.seed_claim``): ``claim_sides.measure(test, flag_set,
    workload)`` gives a side (this session's result of that test, else measured now) and
    ``claim_sides.check(claim, better=..., worse=...)`` judges the claim on them."""
    from pytest_mi300x.plugin.claims import ClaimSides

    yield ClaimSides(request, mi300x_session, served_model)


DEFAULT_SLOS = {"ttft": 500.0, "tpot": 50.0}
"""Interactive-chat targets. Past a server's knee latency grows without bound, so the rate
found depends little on them; tight ones measure the machine's noise instead (on a busy
2-core host a TPOT target of 15 ms failed 10-45% of requests at 4 req/s)."""


@pytest.fixture
def slo_targets() -> dict[str, float]:
    """The SLOs (ms on ``ttft``, ``tpot``, ``e2el``) ``capacity`` holds requests to.
    Hosts do not scale them: override this fixture (in a conftest, per host if need be)."""
    return dict(DEFAULT_SLOS)


@pytest.fixture
def capacity(perf: Measurer, slo_targets: dict[str, float]) -> Callable[..., PerfResult]:
    """``capacity(workload, rates, slos=None, attainment=0.9, refine=3, point_s=5.0,
    retries=1, sweeps=None)``: the highest of ``rates`` (req/s at full size, bisected
    between the last passing and the first failing) at which ``attainment`` of the requests
    meet ``slos`` (default: ``slo_targets``), stored as the figure ``max_rate_under_slo``
    and gated against the baseline (Measurer.run_capacity). One sweep per ``--repeats``,
    or at most ``sweeps``."""

    def find(workload: Workload, rates: list[float], slos: dict[str, float] | None = None,
             attainment: float = 0.9, refine: int = 3, point_s: float = 5.0,
             retries: int = 1, sweeps: int | None = None) -> PerfResult:
        return perf.run_capacity(workload, rates, slos or slo_targets, attainment=attainment,
                                 refine=refine, point_s=point_s, retries=retries,
                                 sweeps=sweeps)

    return find
