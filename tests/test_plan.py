"""`pytest-mi300x plan`: every server a selection would start, and nothing started.

Run on a PATH where docker, pip and the GPU tools are tripwires (tests/doubles/tripwire.py):
the plan must call none of them, start no server and write nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.doubles import install_command

pytest_plugins = ["pytester"]

ROOT = Path(__file__).parent.parent
TRIPWIRED = ("docker", "pip", "pip3", "amd-smi", "rocm-smi", "nvidia-smi")


@pytest.fixture
def checkout(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """The repository's hosts.toml and suites/, on a PATH of tripwires only."""
    shutil.copy(ROOT / "hosts.toml", pytester.path / "hosts.toml")
    shutil.copytree(ROOT / "suites", pytester.path / "suites")
    for command in TRIPWIRED:
        install_command(pytester.path / "bin", command, "tripwire.py")
    monkeypatch.setenv("PATH", str(pytester.path / "bin"))
    monkeypatch.setenv("TRIPWIRE_LOG", str(pytester.path / "tripwire.log"))
    monkeypatch.setenv("PYTEST_MI300X_CACHE", str(pytester.path / "cache"))
    return pytester


def plan(checkout: pytest.Pytester, *args: str) -> tuple[subprocess.CompletedProcess[str],
                                                          dict[str, Any]]:
    out = checkout.path / "plan.json"
    proc = subprocess.run([sys.executable, "-m", "pytest_mi300x.cli", "plan", "--json",
                           str(out), *args], cwd=checkout.path, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not (checkout.path / "tripwire.log").exists(), (
        (checkout.path / "tripwire.log").read_text())
    return proc, json.loads(out.read_text())


def flag(argv: list[str], name: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == name]


def test_the_headline_on_mi300x_leases_8_gpus_and_runs_vllm_at_tp_8(
        checkout: pytest.Pytester) -> None:
    proc, doc = plan(checkout, "suites/", "--gpu-host", "mi300x-01")
    out = proc.stdout
    assert "nothing was started" in out.splitlines()[0]
    headline = [s for s in doc["servers"]
                if any("test_headline.py" in t for t in s["tests"])]
    assert {s["engine"] for s in headline} == {"vllm", "tgi"}
    for server in headline:
        assert server["gpus"] == list(range(8))
        assert server["visibility"] == {"ROCR_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7",
                                        "HIP_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7",
                                        "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"}
        # The visibility env reaches the container by name, with the host's env.
        assert server["env"]["ROCR_VISIBLE_DEVICES"] == "0,1,2,3,4,5,6,7"
        assert server["env"]["NCCL_MIN_NCHANNELS"] == "112"
        assert "ROCR_VISIBLE_DEVICES" in flag(server["argv"], "-e")
        assert server["argv"][:2] == ["docker", "run"]
        assert server["stop"] == ["docker", "rm", "-f", flag(server["argv"], "--name")[0]]
        # QPS 16, 32 and 1000 on one server (which other cases may share).
        assert len([t for t in server["tests"] if "test_headline.py" in t]) == 3
        if server["engine"] == "vllm":
            assert flag(server["argv"], "--tensor-parallel-size") == ["8"]
        else:
            assert flag(server["argv"], "--num-shard") == ["8"]
    assert len([line for line in out.splitlines()
                if line.startswith("  command:") and "--tensor-parallel-size 8" in line]) >= 2
    assert out.count("GPUs:     8 leased, tensor parallel 8; "
                     "ROCR_VISIBLE_DEVICES=0,1,2,3,4,5,6,7") >= 3
    # Case 7: TP 4 leases four GPUs and says so once; no secret is shown.
    [tp4] = [s for s in doc["servers"]
             if "tp-4" in s["flag_sets"] and "-instance-" not in s["key"]]
    assert flag(tp4["argv"], "--tensor-parallel-size") == ["4"]
    assert tp4["visibility"]["ROCR_VISIBLE_DEVICES"] == "0,1,2,3"
    # Two TP-4 instances behind one workload: one server each, on disjoint GPUs.
    pair = [s for s in doc["servers"] if "-instance-" in s["key"]]
    assert [s["gpus"] for s in pair] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert all(s["tests"] == ["suites/test_guide_cases.py::test_case7_two_tp4_instances"
                              "[tp-4-2-instances]"] for s in pair)
    assert all(s["env"]["VLLM_API_KEY" if s["engine"] == "vllm" else "API_KEY"]
               == "<redacted>" for s in doc["servers"])
    # No build was given: the plan says which one it shows.
    assert all("planned with docker:" in s["note"] for s in doc["servers"])
    # Every collected test is in the plan exactly once.
    collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                                "suites/", "--gpu-host", "mi300x-01"], cwd=checkout.path,
                               capture_output=True, text=True, check=True).stdout
    ids = {line for line in collected.splitlines() if "::" in line}
    served = {t: s["key"].split("-instance-")[0] for s in doc["servers"] for t in s["tests"]}
    planned = list(served) + [r["test"] for r in doc["skipped"] + doc["unplanned"]] + \
        doc["claims"]
    assert sorted(planned) == sorted(ids)
    assert doc["claims"] and all("claim" in t for t in doc["claims"])
    # Nothing written but the plan: no results, no locks, no records, no engine.
    assert sorted(p.name for p in checkout.path.iterdir()
                  if p.name not in (".benchmarks", "__pycache__")) == [
        "bin", "hosts.toml", "plan.json", "suites"]
    assert not (checkout.path / "cache").exists()


def test_a_given_image_and_an_installed_build_are_planned_as_given(
        checkout: pytest.Pytester) -> None:
    (checkout.path / "local4.toml").write_text(textwrap.dedent("""
        [hosts.local4]
        accelerator = "mi300x"
        accelerator_count = 4
        launcher = "local"
        tensor_parallel = 2
        [hosts.local4.env]
        HIP_FORCE_DEV_KERNARG = "1"
        [hosts.local4.models]
        "*" = "/models/llama"
    """))
    _, doc = plan(checkout, "suites/test_guide_cases.py", "-k", "case7 or case8",
                  "--gpu-host", "local4", "--hosts-file", "local4.toml",
                  "--vllm-build", "/opt/venvs/vllm-rocm")
    by_name = {s["flag_set"]["name"]: s for s in doc["servers"]}
    seqs = by_name["max-num-seqs-256"]
    assert seqs["argv"][0] == "/opt/venvs/vllm-rocm/bin/python" and seqs["note"] == ""
    # The seed's TP for its tuning cases (the suite's tensor_parallel(4)), not the host's 2.
    assert flag(seqs["argv"], "--tensor-parallel-size") == ["4"]
    assert seqs["env"]["HIP_VISIBLE_DEVICES"] == "0,1,2,3"
    assert seqs["stop"] is None  # a local process group is all there is
    assert any("tp-4" in s["flag_sets"] for s in doc["servers"])
    skipped = {r["test"].rsplit("[", 1)[-1]: r["reason"] for r in doc["skipped"]}
    assert skipped == {
        "tp-8]": "runs on the GPU host: tensor parallel 8 needs 8 GPUs; host 'local4' has 4",
        "tp-4-2-instances]": "runs on the GPU host: 2 instances of tensor parallel 4 need "
                             "8 GPUs; host 'local4' has 4"}
    (checkout.path / "test_not_a_suite.py").write_text("def test_x(llm_server): pass\n")
    proc, doc = plan(checkout, "--gpu-host", "mi300x-01", "-k", "headline or test_x",
                     "--vllm-build", "docker:rocm/vllm-ci:abc123", "-n", "2")
    assert {t.split("::")[0] for s in doc["servers"] for t in s["tests"]} == {
        "suites/test_headline.py"}  # no path given: suites/
    assert "gw0" not in proc.stdout and "workers" not in proc.stdout  # no xdist worker
    vllm = [s for s in doc["servers"] if s["engine"] == "vllm"]
    assert {s["build"] for s in vllm} == {"docker:rocm/vllm-ci:abc123"}
    assert all(s["note"] == "" for s in vllm)
    assert all("rocm/vllm-ci:abc123" in s["argv"] for s in vllm)


def test_the_plan_option_is_a_pytest_option_too(checkout: pytest.Pytester) -> None:
    result = checkout.runpytest_subprocess("suites/test_headline.py", "--mi300x-plan",
                                           "-k", "vllm-seed-default")
    assert result.ret == 0
    result.stdout.fnmatch_lines([
        "pytest-mi300x plan: host cpu (CPU, built-in): 1 server(s) for 3 test(s)*",
        "*--model *tiny-llama-* --served-model-name llama-3.1-70b --host 127.0.0.1 *"])
    assert "passed" not in result.stdout.str()
    assert not (checkout.path / "tripwire.log").exists()


def test_a_plan_needs_a_session_in_plan_mode() -> None:
    from pytest_mi300x.config import Settings
    from pytest_mi300x.hosts.cpu import CPU_HOST
    from pytest_mi300x.plan import make_plan
    from pytest_mi300x.session import PerfSession

    with pytest.raises(ValueError, match="plan mode"):
        make_plan(PerfSession(Settings(), CPU_HOST, Path(os.devnull)), [])


def test_the_readmes_mi300x_plan_runs_each_case_at_the_seeds_tp_and_all_of_it_can_run(
        checkout: pytest.Pytester) -> None:
    """Issue 27 items 2 and 13: the README's MI300X command plans every tuning case at TP 4
    (the seed's), the headline at TP 8, and no workload the GPUs cannot run."""
    proc, doc = plan(checkout, "suites/", "--gpu-host", "mi300x-01",
                     "--vllm-build=docker:rocm/vllm-ci:abc123")
    for server in doc["servers"]:
        tests = {t.split("::")[0] for t in server["tests"]}
        want = 8 if tests == {"suites/test_headline.py"} or server["flag_sets"] == ["tp-8"] \
            else 4
        assert server["tensor_parallel"] == want == len(server["gpus"]), server["key"]
        if server["engine"] == "vllm":
            assert flag(server["argv"], "--tensor-parallel-size") == [str(want)]
    assert "GPUs:     4 leased, tensor parallel 4; ROCR_VISIBLE_DEVICES=0,1,2,3" in proc.stdout
    # Every workload was dry-run and checked against its server's roofline.
    statuses = {w["status"] for w in doc["workloads"]}
    assert "infeasible" not in statuses and "unchecked" not in statuses
    capacity = [w for w in doc["workloads"] if "test_capacity" in w["test"]]
    assert capacity and all(w["status"] == "rescaled" for w in capacity)
    assert all("past the roofline" in w["reason"] for w in capacity)
    qps16 = [w for w in doc["workloads"] if w["test"].endswith("qps-16]")]
    assert qps16 and all(w["status"] == "feasible" for w in qps16)
    assert "workloads: " in proc.stdout.splitlines()[2]
    # No two servers alike (issue 27 item 3): case 5's "amd-env" repeats the host's env, so
    # it shares the default server; its "no-amd-env" arm really runs without that env (the
    # seed's TP added to it keeps what it unsets).
    assert doc["duplicates"] == [] and "duplicate servers: 0" in proc.stdout
    by_set = {n: s for s in doc["servers"] for n in s["flag_sets"]}
    assert "default" in by_set["amd-env"]["flag_sets"]
    assert "NCCL_MIN_NCHANNELS" not in by_set["no-amd-env"]["env"]
    assert by_set["amd-env"]["env"]["NCCL_MIN_NCHANNELS"] == "112"
    # -n auto: as many workers as servers of the host's default TP fit: 8 / 4.
    from pytest_mi300x.plugin.hooks import pytest_xdist_auto_num_workers

    config = checkout.parseconfig("--gpu-host", "mi300x-01", "--hosts-file",
                                  str(checkout.path / "hosts.toml"))
    assert pytest_xdist_auto_num_workers(config) == 2


def test_a_flag_set_whose_env_the_host_sets_shares_its_server(
        checkout: pytest.Pytester) -> None:
    """A set that only repeats the host's env launches what the host's default launches: one
    server for both, not two identical ones (case 5's "amd-env" arm on mi300x-01); a set
    that changes the env, or keeps the host's env off, gets its own."""
    (checkout.path / "test_twins.py").write_text(textwrap.dedent("""
        import pytest
        from pytest_mi300x import DEFAULT_FLAGS, FlagSet, flag_sets

        pytestmark = pytest.mark.tensor_parallel(4)

        @flag_sets(DEFAULT_FLAGS, FlagSet.of("host-env-again", env={"NCCL_MIN_NCHANNELS": "112"}),
                   FlagSet.of("other-env", env={"NCCL_MIN_NCHANNELS": "64"}),
                   FlagSet.of("no-host-env", unset=("NCCL_MIN_NCHANNELS",)))
        def test_twins(perf):
            pass
    """))
    proc, doc = plan(checkout, "test_twins.py", "--gpu-host", "mi300x-01",
                     "--vllm-build=docker:rocm/vllm-ci:abc123")
    served = sorted(sorted(s["flag_sets"]) for s in doc["servers"])
    assert served == [["default", "host-env-again"], ["no-host-env"], ["other-env"]]
    assert doc["duplicates"] == []
    assert "duplicate servers: 0" in proc.stdout
    env = {s["flag_sets"][0]: s["env"] for s in doc["servers"]}
    assert env["other-env"]["NCCL_MIN_NCHANNELS"] == "64"
    assert "NCCL_MIN_NCHANNELS" not in env["no-host-env"]
    # A body that hands perf no workload is said so, not counted as checked.
    assert {w["status"] for w in doc["workloads"]} == {"unchecked"}


def test_servers_that_would_start_alike_are_flagged() -> None:
    """The plan's last check, whatever made two keys differ: servers whose command and env
    are the same but for port, name and GPUs measure the same thing twice."""
    from pytest_mi300x.plan import Plan, PlannedServer

    def server(key: str, gpus: list[int], nccl: str) -> PlannedServer:
        visibility = {"ROCR_VISIBLE_DEVICES": ",".join(map(str, gpus))}
        return PlannedServer(key=key, engine="vllm", build="docker:img@sha256:ab", version="",
                             model="m", model_path="/m", flag_set={"argv": ["--x", "1"]},
                             gpus=gpus, tensor_parallel=4, visibility=visibility,
                             argv=[], env={**visibility, "NCCL_MIN_NCHANNELS": nccl},
                             stop=None)

    found = Plan(host={"name": "mi300x-01"}, servers=[server("a", [0, 1, 2, 3], "112"),
                                                    server("b", [4, 5, 6, 7], "112"),
                                                    server("c", [0, 1, 2, 3], "64")]).duplicates()
    assert found == [[1, 2]]


def test_a_claim_runs_on_the_worker_of_its_sides(checkout: pytest.Pytester) -> None:
    """Under xdist (-n auto: two workers on mi300x-01) each server group goes to one worker;
    a claim naming its sides shares their group, so it finds them measured in its own
    process instead of measuring them again on another worker."""
    from pytest_mi300x.plugin.scheduling import group_of

    items, _ = checkout.inline_genitems("suites/test_guide_cases.py", "suites/test_headline.py",
                                        "--gpu-host", "mi300x-01",
                                        "--vllm-build=docker:rocm/vllm-ci:abc123")
    by_id = {item.nodeid.split("@")[0].split("::", 1)[1]: group_of(item) for item in items}
    case8 = {by_id[f"test_case8_max_num_seqs[max-num-seqs-{n}]"] for n in (4, 512)}
    assert case8 == {by_id["test_case8_claim_a_much_smaller_max_num_seqs_lowers_throughput"]}
    # ... and nothing else: the other case-8 servers and the default server keep their own.
    assert by_id["test_case8_max_num_seqs[max-num-seqs-256]"] not in case8
    assert by_id["test_case1_chunked_prefill[chunked-prefill-on]"] not in case8
    headline = {g for t, g in by_id.items() if t.startswith("test_headline_")}
    assert len(headline) == 1
    # Without xdist the order still puts every claim after the tests it compares.
    names = [item.name for item in items]
    assert names.index("test_case8_claim_a_much_smaller_max_num_seqs_lowers_throughput") > max(
        i for i, n in enumerate(names) if n.startswith("test_case8_max_num_seqs"))
