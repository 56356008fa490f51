"""Slow drift: the current level judged against a long-term anchor, not only against the
rolling baseline that drifts along with it.

A baseline that rolls (a green night's starts join it) or is refreshed takes each small loss
in as the new normal: 3% a release over five releases is 14% in all, and no night sees more
than 3% against its baseline. An anchor does not move: the last release's baseline, or the
baseline as it stood N nights back, kept apart (the night keeps it in its state store). Each
night the current level is judged against it by the one verdict rule (judge/verdict.py), as
the gate judges a night against its baseline: the anchor's starts pooled with the test's
noise record, a regression called where the change is significant at the test's level and
past its floor.

The current level is best given as the rolling baseline's starts with tonight's (several
starts at today's level: more power than tonight's one start), or tonight's starts alone.
``baselines refresh`` uses the same judgement, with the baseline it is about to replace as
the anchor: a refresh that would move a level beyond what its starts resolve says so and
takes it only with ``--accept``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_mi300x.judge import multiplicity
from pytest_mi300x.judge.baselines import Baseline, BaselineError, BaselineStore
from pytest_mi300x.judge.noise import SumSq
from pytest_mi300x.judge.verdict import Kind, Verdict, inconclusive_all, judge_all
from pytest_mi300x.results.stack import setup_of


@dataclass(frozen=True)
class Drift:
    """One test's current level against its anchor."""

    anchor: str
    """What the anchor is (said in every line)."""
    verdicts: list[Verdict] = field(default_factory=list)

    @property
    def drifted(self) -> list[Verdict]:
        """Gated metrics the current level lost against the anchor (significant, past the
        floor): a drift to report, as a regression is."""
        return [v for v in self.verdicts if v.fails]

    @property
    def moved(self) -> list[Verdict]:
        """Gated metrics whose level moved either way beyond what the starts resolve."""
        return [v for v in self.verdicts
                if v.gated and v.kind in (Kind.REGRESSION, Kind.IMPROVEMENT)]

    def lines(self) -> list[str]:
        """One line per moved metric: the change, its interval, against what."""
        out = []
        for v in self.moved:
            lo, hi = v.interval_pct
            out.append(f"{v.metric}: {v.kind.value} {v.change_pct:+.1f}% against {self.anchor} "
                       f"(interval {lo:+.1f}% to {hi:+.1f}%, {len(v.baseline_starts)}+"
                       f"{len(v.candidate_starts)} starts, spread {v.noise_pct:.1f}%; floor "
                       f"{v.threshold_pct:g}%)")
        return out


def against_anchor(anchor: Baseline, reps: Sequence[Mapping[str, float]],
                   starts: Sequence[int] = (), *, alpha: float = multiplicity.ALPHA_TEST,
                   floors: Mapping[str, float] | None = None,
                   noise: Mapping[str, float] | None = None,
                   records: Mapping[str, SumSq] | None = None,
                   stack: Mapping[str, Any] | None = None, label: str = "") -> Drift:
    """The current level of one test (``reps``, each run's figures, with the server start
    of each in ``starts``: tonight's, or the rolling baseline's with tonight's) judged
    against ``anchor`` (a stored baseline kept apart: the last release's, or the baseline as
    it stood N nights back).

    ``alpha`` is the test's one-sided share of the night's budget (the anchor check is one
    more comparison a night makes: count it in the split, judge/multiplicity.py);
    ``floors`` and ``noise`` default to those the anchor recorded from its host;
    ``records`` is the test's noise evidence (default: the anchor's own record); ``stack``
    the current run's (results/stack.py): on another setup (hardware, workload, flag set)
    nothing is judged, the build may differ (that is the point); ``label`` names the
    anchor in the lines (default: its build and date)."""
    host = anchor.provenance.get("host") or {}
    label = label or (f"the anchor {anchor.comparability.get('engine_build', '?')} of "
                      f"{anchor.created_at or '?'}")
    if stack is not None and setup_of(anchor.comparability) != setup_of(dict(stack)):
        names = sorted({k for r in reps for k in r} & {k for r in anchor.repetitions for k in r})
        return Drift(label, inconclusive_all(names, f"{label} ran another setup: not judged"))
    verdicts = judge_all(anchor.repetitions, reps, baseline_starts=anchor.server_of,
                         candidate_starts=starts,
                         floors=floors if floors is not None else host.get("floors") or {},
                         noise=noise if noise is not None else host.get("noise") or {},
                         records=records if records is not None else anchor.noise_record(),
                         alpha=alpha, pool_record=True, detail=f"against {label}")
    return Drift(label, verdicts)


def refresh_moves(before: BaselineStore, after: BaselineStore,
                  alpha_session: float = multiplicity.ALPHA_SESSION
                  ) -> dict[Path, Drift]:
    """Per baseline file a refresh rewrote (``after``, relative paths as in ``before``),
    the new level judged against the one it replaces, where the two ran the same setup;
    only those that moved. The session's budget is split over the baselines compared."""
    pairs: list[tuple[Path, Baseline, Baseline]] = []
    for path, new in after.all():
        relative = path.relative_to(after.root)
        try:
            old = before.load(new.host, new.engine, new.model, new.test)
        except BaselineError:
            old = None  # an unreadable old baseline is replaced, as a refresh always did
        if old is None or old.to_dict() == new.to_dict():
            continue
        if setup_of(old.comparability) == setup_of(new.comparability):
            pairs.append((relative, old, new))
    alpha = multiplicity.per_test_alpha(len(pairs), alpha_session=alpha_session)
    out = {}
    for relative, old, new in pairs:
        drift = against_anchor(old, new.repetitions, new.server_of, alpha=alpha,
                               label=f"the baseline it replaces ({old.server_count} starts "
                                     f"of {old.comparability.get('engine_build', '?')})")
        if drift.moved:
            out[relative] = drift
    return out


def judge_stores(anchor: BaselineStore, current: BaselineStore,
                 alpha_session: float = multiplicity.ALPHA_SESSION) -> list[str]:
    """The night's drift check: each current (rolling) baseline, its starts at today's
    level, judged against the same test's baseline in ``anchor`` (a copy kept N green
    nights back); one line per metric that moved beyond what the starts resolve, and one
    line saying what was judged. The checks share the night's budget."""
    pairs: list[tuple[Baseline, Baseline]] = []
    for _, now in current.all():
        try:
            then = anchor.load(now.host, now.engine, now.model, now.test)
        except BaselineError:
            then = None
        if then is not None and then.to_dict() != now.to_dict():
            pairs.append((then, now))
    if not pairs:
        return ["drift: nothing to judge yet (the anchor is today's baselines)"]
    alpha = multiplicity.per_test_alpha(len(pairs), alpha_session=alpha_session)
    lines = []
    for then, now in pairs:
        drift = against_anchor(then, now.repetitions, now.server_of, alpha=alpha,
                               stack=now.comparability,
                               label=f"the anchor ({then.server_count} starts of "
                                     f"{then.comparability.get('engine_build', '?')})")
        lines += [f"drift: {now.test}: {line}" for line in drift.lines()]
    moved = len(lines)
    lines.append(f"drift: {len(pairs)} test(s) judged against their anchor; "
                 + (f"{moved} metric(s) moved" if moved else "none moved beyond what its "
                    "starts resolve"))
    return lines
