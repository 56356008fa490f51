from __future__ import annotations

import math
from pathlib import Path

import pytest

from pytest_mi300x.hosts.cpu import CPU_HOST
from pytest_mi300x.hosts.profile import TINY_MODEL, HostConfigError, WorkloadScale
from pytest_mi300x.hosts.toml import load_hosts, select_host

GOOD = """
[hosts.mi300x-01]
accelerator = "mi300x"
accelerator_count = 8
launcher = "docker"
engine_args = ["--max-num-seqs", "1024"]
scale = { prompts = 1.0, rate = 1.0, lengths = 1.0 }
[hosts.mi300x-01.env]
NCCL_MIN_NCHANNELS = "112"
[hosts.mi300x-01.models]
"llama-3.1-70b" = "/models/Llama-3.1-70B-Instruct"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hosts.toml"
    path.write_text(text)
    return path


def test_cpu_host_is_built_in_and_maps_every_model_to_the_tiny_one() -> None:
    host = select_host("cpu", None)
    assert host is CPU_HOST
    assert host.resolve_model("llama-3.1-405b") == TINY_MODEL
    assert host.env["HF_HUB_OFFLINE"] == "1"


def test_hosts_file_adds_profiles(tmp_path: Path) -> None:
    hosts = load_hosts(write(tmp_path, GOOD))
    host = hosts["mi300x-01"]
    assert set(hosts) == {"cpu", "mi300x-01"}
    assert host.accelerator_count == 8
    assert host.launcher == "docker"
    assert host.env["NCCL_MIN_NCHANNELS"] == "112"
    assert host.engine_args == ("--max-num-seqs", "1024")
    assert host.max_servers == 8
    assert host.resolve_model("llama-3.1-70b") == "/models/Llama-3.1-70B-Instruct"


def test_unknown_host_names_file_and_known_hosts(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    with pytest.raises(HostConfigError) as exc:
        select_host("mi300x-99", path)
    message = str(exc.value)
    assert "\n" not in message
    assert str(path) in message and "'mi300x-99'" in message
    assert "cpu, mi300x-01" in message


@pytest.mark.parametrize(("snippet", "field", "value"), [
    ('accelerator = "h100x"', "accelerator", "'h100x'"),
    ('accelerator = "mi300x"\naccelerator_count = -1', "accelerator_count", "-1"),
    ('accelerator = "mi300x"\naccelerator_count = 8\nlauncher = "ssh"', "launcher", "'ssh'"),
    ('accelerator = "cpu"\nscale = { rate = 0 }', "scale.rate", "0"),
    ('accelerator = "cpu"\nscale = { min_prompts = 0.5 }', "scale.min_prompts", "0.5"),
    ('accelerator = "cpu"\ngpus = 8', "gpus", "known field"),
])
def test_bad_field_names_file_field_and_value(tmp_path: Path, snippet: str, field: str,
                                              value: str) -> None:
    path = write(tmp_path, f"[hosts.bad]\n{snippet}\n")
    with pytest.raises(HostConfigError) as exc:
        load_hosts(path)
    message = str(exc.value)
    assert "\n" not in message
    assert str(path) in message and field in message and value in message


def test_invalid_toml_is_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "[hosts.x\n")
    with pytest.raises(HostConfigError, match="not valid TOML"):
        load_hosts(path)


def test_model_missing_on_host_says_where_to_add_it(tmp_path: Path) -> None:
    host = load_hosts(write(tmp_path, GOOD))["mi300x-01"]
    with pytest.raises(HostConfigError, match=r"\[hosts.mi300x-01.models\]"):
        host.resolve_model("llama-3.1-405b")


def test_scale_keeps_burst_rate_and_at_least_one_prompt() -> None:
    scale = WorkloadScale(prompts=0.1, rate=0.25, lengths=0.25)
    assert math.isinf(scale.request_rate(math.inf))
    assert scale.request_rate(16) == pytest.approx(4.0)
    assert scale.num_prompts(400) == 40
    assert scale.num_prompts(1) == 1
    assert scale.length(256) == 64


def test_min_prompts_lengthens_short_runs_but_never_past_the_suite(tmp_path: Path) -> None:
    path = write(tmp_path, '[hosts.small]\naccelerator = "cpu"\n'
                           'scale = { prompts = 0.1, min_prompts = 200 }\n')
    scale = load_hosts(path)["small"].scale
    assert scale.num_prompts(400) == 200      # a tenth would be 40: too short to be stable
    assert scale.num_prompts(5000) == 500     # a tenth is already past the minimum
    assert scale.num_prompts(50) == 50        # never more than the suite asked for


def test_floors_come_from_the_host_profile(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + '[hosts.mi300x-01.floors]\nmedian_ttft_ms = 8\n')
    assert load_hosts(path)["mi300x-01"].floors == {"median_ttft_ms": 8.0}
    # The cpu host's floors let a 10% change count for every gated figure, bursts too, and
    # each of them has a recorded start-to-start noise for the verdict to pool.
    gated = ("request_throughput", "output_throughput", "median_ttft_ms", "median_tpot_ms")
    assert all(CPU_HOST.floors[m] <= 10.0 for m in gated)
    assert all(f <= 10.0 for f in CPU_HOST.burst_floors.values())
    assert all(0 < CPU_HOST.noise[m] < CPU_HOST.floors[m] * 2 for m in gated)
    burst = write(tmp_path, GOOD + '[hosts.mi300x-01.burst_floors]\nrequest_throughput = 12\n')
    assert load_hosts(burst)["mi300x-01"].burst_floors == {"request_throughput": 12.0}
    worse = write(tmp_path, GOOD + '[hosts.mi300x-01.burst_floors]\nrequest_throughput = -1\n')
    with pytest.raises(HostConfigError, match=r"burst_floors is \{'request_throughput': -1\}"):
        load_hosts(worse)
    bad = write(tmp_path, '[hosts.x]\naccelerator = "cpu"\nfloors = { median_ttft_ms = "ten" }\n')
    with pytest.raises(HostConfigError, match="floors"):
        load_hosts(bad)


def test_cases_this_host_cannot_run_say_they_run_on_the_gpu_host(tmp_path: Path) -> None:
    from pytest_mi300x.config import Settings
    from pytest_mi300x.engines.flags import FlagSet
    from pytest_mi300x.session import PerfSession

    settings = Settings(gpu_host="cpu", hosts_file=None, vllm_build="x", engine_env=(),
                        engine_args=(), results_dir=None, cache_dir=None, run_id="r")
    session = PerfSession(settings, CPU_HOST, tmp_path, progress=lambda line: None)
    plain = FlagSet("default")
    assert session.unavailable("vllm", plain) is None
    assert "needs mi300x" in session.unavailable("vllm", plain, ("mi300x",))
    tp8 = FlagSet.of("tp-8", tensor_parallel_size=8)
    assert "tensor parallel 8 needs 8 GPUs" in session.unavailable("vllm", tp8)
    assert session.unavailable("vllm", FlagSet.of("tp-1", tensor_parallel_size=1)) is None
    assert session.unavailable("tgi", plain).startswith("runs on the GPU host")


def test_cpu_host_sends_rates_it_cannot_keep_as_a_burst() -> None:
    scale = CPU_HOST.scale
    assert scale.request_rate(16.0) == 4.0 and scale.request_rate(32.0) == 8.0
    assert math.isinf(scale.request_rate(1000.0))
    assert scale.request_rate(1000.0, burst_above_max=False) == 250.0


def test_engine_nice_defaults_to_10_and_is_checked(tmp_path: Path) -> None:
    assert CPU_HOST.engine_nice == 10 and CPU_HOST.describe()["engine_nice"] == 10
    assert load_hosts(write(tmp_path, GOOD))["mi300x-01"].engine_nice == 10
    def with_nice(value: int) -> Path:
        return write(tmp_path, GOOD.replace("[hosts.mi300x-01]\n",
                                            f"[hosts.mi300x-01]\nengine_nice = {value}\n"))

    assert load_hosts(with_nice(0))["mi300x-01"].engine_nice == 0
    bad = with_nice(-5)
    with pytest.raises(HostConfigError, match=r"engine_nice is -5; give a niceness from 0"):
        load_hosts(bad)


def test_a_fleet_of_one_kind_is_one_profile_and_a_line_per_host(tmp_path: Path) -> None:
    """``based_on``: a host of the file (its tables merged under this one's) or a built-in
    host (its measured settings kept, a few fields changed)."""
    path = tmp_path / "hosts.toml"
    path.write_text(
        '[hosts.mi300x-01]\naccelerator = "mi300x"\naccelerator_count = 8\n'
        'tensor_parallel = 4\n[hosts.mi300x-01.env]\nNCCL_MIN_NCHANNELS = "112"\n'
        'HF_HUB_OFFLINE = "1"\n'
        '[hosts.mi300x-02]\nbased_on = "mi300x-01"\n[hosts.mi300x-02.env]\n'
        'NCCL_MIN_NCHANNELS = "64"\n'
        '[hosts.mi300x-03]\nbased_on = "mi300x-02"\ndescription = "the third"\n'
        '[hosts.cpu-b]\nbased_on = "cpu"\ndescription = "a second cpu runner"\n'
        '[hosts.cpu-b.env]\nVLLM_CPU_KVCACHE_SPACE = "2"\n')
    hosts = load_hosts(path)
    two, three, cpu_b = hosts["mi300x-02"], hosts["mi300x-03"], hosts["cpu-b"]
    assert two.accelerator_count == 8 and two.tensor_parallel == 4
    assert dict(two.env) == {"NCCL_MIN_NCHANNELS": "64", "HF_HUB_OFFLINE": "1"}
    assert three.description == "the third" and three.env["NCCL_MIN_NCHANNELS"] == "64"
    assert cpu_b.name == "cpu-b" and cpu_b.scale == CPU_HOST.scale
    assert cpu_b.frontend_cpus == CPU_HOST.frontend_cpus and cpu_b.floors == CPU_HOST.floors
    assert cpu_b.env["VLLM_CPU_KVCACHE_SPACE"] == "2" and cpu_b.env["HF_HUB_OFFLINE"] == "1"


@pytest.mark.parametrize(("text", "message"), [
    ('[hosts.a]\nbased_on = "b"\n[hosts.b]\nbased_on = "a"\n', "in turn; base each host"),
    ('[hosts.a]\nbased_on = "nowhere"\n', "name a host of this file or a built-in one"),
    ('[hosts.a]\nbased_on = "cpu"\nscale = { prompts = 1.0 }\n',
     "[hosts.a] scale cannot change the built-in 'cpu'"),
])
def test_a_bad_base_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "hosts.toml"
    path.write_text(text)
    with pytest.raises(HostConfigError) as err:
        load_hosts(path)
    assert message in str(err.value) and str(path) in str(err.value)
    assert "\n" not in str(err.value)
