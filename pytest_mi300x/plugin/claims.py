"""Claim tests: the seed's claims checked on what this session measured.

A claim test names the measurements it compares by the test that makes them (a case of
the suite, with its flag set and workload). When that test already ran in this process
(the plugin runs claim tests last), its result is reused; otherwise (a ``-k`` selection,
another xdist worker) the claim test measures it itself, under that test's id: the same
result file, the same baseline. Either way both sides come from this session on this
machine, so a claim is checked side against side, never against the seed's numbers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from pytest_mi300x.judge.claims import Claim, ClaimCheck, check_claim
from pytest_mi300x.plugin.scheduling import flag_set_on_host
from pytest_mi300x.plugin.stash import PROGRESS_KEY, SERVER_KEY, SIDE_MEASURERS_KEY
from pytest_mi300x.plugin.summary import CLAIM_PROPERTY

if TYPE_CHECKING:
    from pytest_mi300x.engines.flags import FlagSet
    from pytest_mi300x.load.measurer import Measured, PerfResult
    from pytest_mi300x.session import PerfSession
    from pytest_mi300x.workload.workload import Workload


MIN_REPETITIONS = 2
"""Below this a side has no spread of its own and the verdict cannot decide."""


class ClaimSides:
    """What the ``claim_sides`` fixture hands a claim test."""

    def __init__(self, request: pytest.FixtureRequest, session: PerfSession,
                 served_model: str) -> None:
        self.request = request
        self.session = session
        self.served_model = served_model
        self.module = request.node.nodeid.split("::")[0]
        self._sides: dict[int, Measured] = {}

    def measure(self, test: str, flag_set: FlagSet, workload: Workload, *,
                serving_engine: str = "vllm", repeats: int | None = None) -> PerfResult:
        """The result of ``test`` (``"test_case8[max-num-seqs-8]"``, in this module): this
        session's, or measured now with ``flag_set`` and ``workload`` under its id (with
        ``repeats`` repetitions when given and more than the session's ``--repeats``).

        Skips with the reason when this host cannot run the side (no such engine or
        accelerator, a flag this engine build dropped).
        """
        nodeid = test if "::" in test else f"{self.module}::{test}"
        flag_set = flag_set_on_host(self.request.node, flag_set)  # as the side's test runs it
        found = self.session.measured.get(nodeid)
        if found is not None and found.workload == workload.describe():
            if found.failed:
                pytest.skip(f"{test}: its measurement failed earlier in this session "
                            f"({found.failed}); not measured a second time, so the claim "
                            "has nothing to compare")
            self._sides[id(found.result)] = found
            return found.result
        session = self.session
        wanted = tuple(a for m in self.request.node.iter_markers("accelerator") for a in m.args)
        reason = session.unavailable(serving_engine, flag_set, wanted)
        if reason:
            pytest.skip(f"{test}: {reason}")
        engine = session.engine(serving_engine)
        reason = engine.skip_reason(flag_set, session.engine_version(serving_engine))
        if reason:
            pytest.skip(f"{test}: {reason}")
        from pytest_mi300x.engines.base import EngineUnsupported
        from pytest_mi300x.servers.process import ServerError

        try:
            server = session.server(serving_engine, self.served_model, flag_set)
        except ServerError as exc:
            # An engine that refuses the side's flags on this hardware at start: a skip
            # with its reason, as the case's own test gets (plugin/fixtures.py).
            refused = engine.refusal(exc.log_tail)
            if refused:
                pytest.skip(f"{test}: {refused}")
            raise
        self.request.node.stash[SERVER_KEY] = server
        try:
            measurer = session.measurer(server, nodeid, self.served_model,
                                        progress=self.request.config.stash.get(PROGRESS_KEY,
                                                                               None))
            measurer.repeats = max(measurer.repeats, repeats or 0)
            # Its baseline (under --update-baselines) ships with this test's report.
            self.request.node.stash.setdefault(SIDE_MEASURERS_KEY, []).append(measurer)
            result = measurer.run(workload)
        except EngineUnsupported as exc:
            pytest.skip(f"{test}: {exc}")
        finally:
            session.pool.idle()
        self._sides[id(result)] = session.measured[nodeid]
        return result

    def check(self, claim: Claim, *, better: PerfResult, worse: PerfResult,
              note: str = "") -> ClaimCheck:
        """Judge the claim on the two sides' repetitions. It holds: the test passes, saying
        this run's figures; not shown (an effect below the margin, or within the noise): an
        expected failure with this run's figures, never a timed assertion that flakes;
        reversed: ClaimReversed fails the test. Sides from two servers are judged with the
        host's start-to-start noise. ``note`` (a part of the claim left unchecked, and
        why) is added to what the test says."""
        fewest = min(len(better.repetitions), len(worse.repetitions))
        if fewest < MIN_REPETITIONS:
            pytest.skip(f"claim {claim.name!r} not checked: a side has {fewest} repetition(s) "
                        f"and a claim needs {MIN_REPETITIONS} a side to tell its effect from "
                        f"the noise; run with --repeats {MIN_REPETITIONS} or more")
        two_servers = (self._server_of(better) != self._server_of(worse))
        noise = self.session.host.noise.get(claim.metric, 0.0) if two_servers else 0.0
        checked = check_claim(claim, [r.figures for r in better.repetitions],
                              [r.figures for r in worse.repetitions], noise_pct=noise)
        self.request.node.user_properties.append(("mi300x.claim." + claim.name,
                                                  checked.outcome))
        said = checked.message().splitlines()
        if note:
            said[0] += f"; {note}"
        self.request.node.user_properties.append((CLAIM_PROPERTY, said[0]))
        if checked.outcome == "not shown":
            pytest.xfail("\n".join(said))
        return checked.check()

    def _server_of(self, result: PerfResult) -> str:
        side = self._sides.get(id(result))
        return side.server if side is not None else str(id(result))

    def only_on(self, accelerators: tuple[str, ...], why: str) -> None:
        """Skip the claim, with the reason, on hosts whose accelerator is not listed."""
        host = self.session.host
        if host.accelerator not in accelerators:
            pytest.skip(f"claim not asserted on host {host.name!r} ({host.accelerator}): {why}")
