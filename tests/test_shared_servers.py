"""Flag sets that launch the same server share it (servers/shared.py): a flag giving its
engine default, or the same flags under two names. Harness decisions are checked with the
lifecycle TEST DOUBLE as the engine (it prints a vLLM-shaped report of its settings when
asked); tests/test_engine.py checks the same on the real engine."""

from __future__ import annotations

import json

import pytest

from pytest_mi300x.engines.flags import DEFAULT_FLAGS, FlagSet
from pytest_mi300x.engines.vllm import KIND as VLLM
from pytest_mi300x.load.runs import fresh_seeds
from pytest_mi300x.workload.arrivals import Arrivals
from pytest_mi300x.workload.datasets import RandomDataset
from pytest_mi300x.workload.workload import Workload
from tests.test_faults import engine_double

pytest_plugins = ["pytester"]

AUTO = FlagSet.of("kv-cache-auto", kv_cache_dtype="auto")
CP_ON = FlagSet.of("chunked-prefill-on", enable_chunked_prefill=True)


def test_flags_giving_the_engines_default_launch_what_the_set_without_them_launches() -> None:
    label = DEFAULT_FLAGS.launch_label
    assert AUTO.beyond(VLLM.resolved_defaults).launch_label == label
    assert CP_ON.beyond(VLLM.resolved_defaults).launch_label == label
    fp8 = FlagSet.of("kv-cache-fp8", kv_cache_dtype="fp8")
    assert fp8.beyond(VLLM.resolved_defaults).flags == fp8.flags
    # The same flags under two names; the env is part of what is launched.
    tuned = FlagSet.of("guide-tuned", enable_chunked_prefill=False, max_num_seqs=1024)
    seed = FlagSet.of("vllm-seed-tuned", enable_chunked_prefill=False, max_num_seqs=1024)
    assert tuned.launch_label == seed.launch_label
    assert FlagSet.of("dev", env={"A": "1"}).launch_label != label


def test_vllms_report_of_its_settings_is_read_from_its_log() -> None:
    line = ("(EngineCore pid=1) INFO 12-06 02:04:32 [core.py:133] Initializing a V1 LLM engine "
            "(v0.32.0) with config: model='/m', dtype=torch.bfloat16, kv_cache_dtype=auto, "
            "observability_config=ObservabilityConfig(kv_cache_metrics=False), "
            "enable_prefix_caching=True, enable_chunked_prefill=True, compilation_config={}")
    report = VLLM.resolved_config("INFO start\n" + line + "\nINFO ready\n")
    assert report["kv_cache_dtype"] == "auto" and report["enable_chunked_prefill"] == "True"
    assert "kv_cache_metrics" not in report  # inside another setting's value
    assert VLLM.resolved_config("no report here") == {}


def test_another_test_of_the_same_dataset_on_a_server_measures_other_seeds() -> None:
    measured: dict[str, dict[int, str]] = {}
    burst = Workload(RandomDataset(64, 64, 40, seed=0), Arrivals())
    assert fresh_seeds(measured, burst, 3, "t::a") == [0, 1, 2]
    assert fresh_seeds(measured, burst, 3, "t::a") == [0, 1, 2]  # its own again: the same
    assert fresh_seeds(measured, burst, 3, "t::b") == [3, 4, 5]  # not a's cached prompts
    other = Workload(RandomDataset(64, 32, 40, seed=0), Arrivals())
    assert fresh_seeds(measured, other, 3, "t::b") == [0, 1, 2]  # another dataset
    fresh = Workload(RandomDataset(64, 64, 40, seed=0), Arrivals(), prefix_cache="fresh")
    assert fresh_seeds(measured, fresh, 3, "t::c") == [0, 1, 2]  # empties the cache itself
    assert fresh_seeds(None, burst, 3, "t::c") == [0, 1, 2]  # an endpoint: not tracked


SUITE = """
import json, os
from pytest_mi300x import DEFAULT_FLAGS, FlagSet, flag_sets

SETS = [DEFAULT_FLAGS, FlagSet.of("kv-cache-auto", kv_cache_dtype="auto"),
        FlagSet.of("chunked-prefill-on", enable_chunked_prefill=True),
        FlagSet.of("seqs-8-a", max_num_seqs=8), FlagSet.of("seqs-8-b", max_num_seqs=8)]

@flag_sets(*SETS)
def test_serve(llm_server, flag_set):
    described = llm_server.describe()
    with open("served.jsonl", "a") as fh:
        fh.write(json.dumps({"asked": flag_set.name, "pid": llm_server.process.pid,
                             "recorded": described["flag_set"]["name"],
                             "resolved": described.get("resolved", {})}) + "\\n")
"""


def served(pytester: pytest.Pytester, report: str | None,
           monkeypatch: pytest.MonkeyPatch) -> list[dict[str, object]]:
    engine_double(pytester)
    if report is not None:
        monkeypatch.setenv("LIFECYCLE_DOUBLE_REPORT", report)
    pytester.makepyfile(test_shared=SUITE)
    result = pytester.runpytest_subprocess("--gpu-host", "cpu2", "-p", "no:cacheprovider",
                                           timeout=600)
    result.assert_outcomes(passed=5)
    return [json.loads(line) for line in (pytester.path / "served.jsonl").read_text()
            .splitlines()]


def test_flag_sets_launching_the_same_server_share_one_start_and_keep_their_names(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = served(pytester, "kv_cache_dtype=auto, enable_prefix_caching=True, "
                            "enable_chunked_prefill=True", monkeypatch)
    by = {r["asked"]: r for r in rows}
    assert by["default"]["pid"] == by["kv-cache-auto"]["pid"] == \
        by["chunked-prefill-on"]["pid"]
    assert by["seqs-8-a"]["pid"] == by["seqs-8-b"]["pid"] != by["default"]["pid"]
    assert len({r["pid"] for r in rows}) == 2  # two starts for five flag sets
    assert all(r["recorded"] == r["asked"] for r in rows)  # results stay per flag set
    assert by["kv-cache-auto"]["resolved"] == {"kv_cache_dtype": "auto"}
    assert by["chunked-prefill-on"]["resolved"] == {"enable_chunked_prefill": "True"}
    # Back to back, so one server serves them all without a restart in between.
    assert [r["asked"] for r in rows][:3] == ["chunked-prefill-on", "default",
                                              "kv-cache-auto"]


def test_a_server_that_does_not_report_the_value_asked_is_not_shared(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    # This build runs fp8 and chunked prefill off by default: the sets giving auto and on
    # get servers of their own, as given.
    rows = served(pytester, "kv_cache_dtype=fp8, enable_chunked_prefill=False", monkeypatch)
    by = {r["asked"]: r for r in rows}
    assert len({by[n]["pid"] for n in ("default", "kv-cache-auto", "chunked-prefill-on")}) == 3
    assert all(r["recorded"] == r["asked"] and r["resolved"] == {} for r in rows)


def test_a_claim_measuring_on_one_flag_set_runs_with_that_sets_tests(
        pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_order="""
        import pytest
        from pytest_mi300x import DEFAULT_FLAGS, FlagSet, flag_sets

        OWN = FlagSet.of("b-own", max_num_seqs=4)

        @pytest.mark.seed_claim
        def test_claim_on_results(claim_sides):
            pass

        @pytest.mark.seed_claim(flag_set=OWN)
        def test_claim_on_its_own(claim_sides):
            pass

        @flag_sets(FlagSet.of("c-auto", kv_cache_dtype="auto"), OWN, DEFAULT_FLAGS,
                   FlagSet.of("a-other", max_num_seqs=2))
        def test_case(flag_set):
            pass
    """)
    result = pytester.runpytest("--collect-only", "-q")
    ids = [line.split("::")[1] for line in result.stdout.lines if "::" in line]
    assert ids == ["test_case[a-other]", "test_case[b-own]", "test_claim_on_its_own",
                   "test_case[c-auto]", "test_case[default]", "test_claim_on_results"]
