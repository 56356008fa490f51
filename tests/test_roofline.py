"""The roofline (hosts/roofline.py) and a workload's feasibility on a host (load/feasibility.py),
on the real hosts.toml profile and the real config.json of Llama 3.1 70B and 405B (FP8) as
shipped in pytest_mi300x/hosts/models/ (their source in each file's ``_source``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_mi300x.hosts.peaks import KNOWN_PEAKS
from pytest_mi300x.hosts.profile import HostConfigError
from pytest_mi300x.hosts.roofline import MODELS_DIR, ModelShape, Roofline, model_shape
from pytest_mi300x.hosts.toml import select_host
from pytest_mi300x.load.feasibility import check, request_lengths, roofline_of
from pytest_mi300x.workload.datasets import RandomDataset

ROOT = Path(__file__).resolve().parent.parent
HOSTS = ROOT / "hosts.toml"
L70 = "/data/models/Meta-Llama-3.1-70B-Instruct"
L405 = "/data/models/Meta-Llama-3.1-405B-Instruct-FP8"


def mi300x_01():
    return select_host("mi300x-01", HOSTS)


def test_the_real_configs_give_the_published_sizes() -> None:
    l70 = model_shape(L70, "llama-3.1-70b")
    l405 = model_shape(L405, "llama-3.1-405b")
    assert l70 is not None and l405 is not None
    # Meta's model cards: 70.6B and 405B parameters.
    assert abs(l70.params / 1e9 - 70.6) < 0.1
    assert abs(l405.params / 1e9 - 405.9) < 0.5
    # GQA with 8 KV heads of 128 over 80 layers, BF16: 320 KiB of KV cache per token.
    assert l70.kv_bytes_per_token() == 80 * 8 * 128 * 2 * 2 == 327_680
    assert l70.weight_bytes == 2 * l70.params  # BF16 throughout
    # The FP8 checkpoint: feed-forward weights of the inner 124 layers at one byte each.
    assert l405.fp8_mlp_layers == 124
    assert l405.weight_bytes == 2 * l405.params - 124 * 3 * 16384 * 53248
    assert "Hugging Face" in l70.source and "Llama 3 paper" in l405.source


def test_a_served_folders_own_config_wins_over_the_shipped_copy(tmp_path: Path) -> None:
    folder = tmp_path / "Meta-Llama-3.1-70B-Instruct"
    folder.mkdir()
    config = json.loads((MODELS_DIR / "Meta-Llama-3.1-70B-Instruct.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 40}))
    shape = model_shape(str(folder), "half")
    assert shape is not None and shape.layers == 40
    assert model_shape(str(tmp_path / "unknown-model"), "x") is None
    with pytest.raises(ValueError, match="hidden_size"):
        ModelShape.from_config({"vocab_size": 3}, "x", "somewhere/config.json")


def test_the_capacity_tests_lowest_rate_is_past_the_roofline_of_eight_mi300x() -> None:
    """Issue 27, item 2: 32 req/s of 2048 in / 1024 out on Llama 70B asks about 14 PFLOP/s of
    dense BF16; eight MI300X peak at about 10.5."""
    host = mi300x_01()
    assert host.peaks == KNOWN_PEAKS["mi300x"]
    roofline, why = roofline_of(host, L70, "llama-3.1-70b", 8)
    assert roofline is not None and not why
    lengths = request_lengths(RandomDataset(input_len=2048, output_len=1024, num_prompts=400))
    assert lengths is not None
    most, bound = roofline.max_rate(lengths)
    asked = 32 * 3072 * 2 * roofline.model.params / 1e15
    assert 13.5 < asked < 14.2  # PFLOP/s at 2 x params a token
    assert bound == "compute" and 20 < most < 32
    saturating = check(roofline, why, lengths, 32.0)
    assert saturating.status == "saturating" and "at most 23.8 req/s" in saturating.reason
    # The sweep's ladder is fitted under the roofline, keeping its shape.
    ladder = [32.0, 64.0, 128.0, 192.0, 256.0]
    fitted = check(roofline, why, lengths, 32.0, ladder)
    assert fitted.status == "rescaled" and "\n" not in fitted.reason
    assert max(fitted.rates) == pytest.approx(most)
    assert [r / fitted.rates[0] for r in fitted.rates] == pytest.approx([1, 2, 4, 6, 8])
    assert check(roofline, why, lengths, 1.0, [r / 100 for r in ladder]).status == "feasible"


def test_a_model_that_does_not_fit_its_gpus_is_refused_in_one_line() -> None:
    host = mi300x_01()
    config = json.loads((MODELS_DIR / "Meta-Llama-3.1-405B-Instruct-FP8.json").read_text())
    del config["quantization_config"]  # the BF16 checkpoint: 812 GB of weights
    bf16 = ModelShape.from_config(config, "llama-3.1-405b-bf16", "test")
    lengths = [(256, 256)] * 10
    four = check(Roofline(host.peaks, 4, bf16, accelerator="mi300x"), "", lengths, 1.0)
    assert four.status == "infeasible"
    assert "do not fit 4 x mi300x (691 GB" in four.reason and "\n" not in four.reason
    eight = check(Roofline(host.peaks, 8, bf16, accelerator="mi300x"), "", lengths, 1.0)
    assert eight.status == "feasible"
    # One request whose KV cache cannot fit beside the weights of 70B on one GPU.
    l70 = model_shape(L70, "llama-3.1-70b")
    assert l70 is not None
    long = check(Roofline(host.peaks, 1, l70, accelerator="mi300x"), "", [(120_000, 8000)],
                 1.0)
    assert long.status == "infeasible" and "KV cache" in long.reason


def test_no_roofline_on_the_cpu_host_and_the_record_says_why() -> None:
    cpu = select_host("cpu", None)
    roofline, why = roofline_of(cpu, L70, "llama-3.1-70b", 0)
    assert roofline is None and "no roofline on host 'cpu'" in why
    found = check(roofline, why, [(64, 16)], 10.0)
    assert found.status == "unchecked" and found.reason == why


def test_a_host_profile_can_give_its_own_peaks_and_a_bad_one_is_one_line(
        tmp_path: Path) -> None:
    # Right under the host's own table, whatever sub-tables follow it.
    text = HOSTS.read_text().replace(
        "[hosts.mi300x-01]\n", "[hosts.mi300x-01]\nroofline = { bf16_tflops = 1000.0 }\n", 1)
    (tmp_path / "capped.toml").write_text(text)
    capped = select_host("mi300x-01", tmp_path / "capped.toml")
    assert capped.peaks is not None and capped.peaks.bf16_tflops == 1000.0
    assert capped.peaks.hbm_tb_s == 5.3  # the rest from the data sheet
    assert capped.describe()["roofline"]["bf16_tflops"] == 1000.0
    (tmp_path / "bad.toml").write_text(text.replace("1000.0", "-3"))
    with pytest.raises(HostConfigError) as bad:
        select_host("mi300x-01", tmp_path / "bad.toml")
    message = str(bad.value)
    assert "bad.toml" in message and "roofline.bf16_tflops is -3" in message
    assert "\n" not in message


def test_the_achieved_fractions_of_a_run() -> None:
    l70 = model_shape(L70, "llama-3.1-70b")
    assert l70 is not None
    peaks = KNOWN_PEAKS["mi300x"]
    roofline = Roofline(peaks, 4, l70, accelerator="mi300x")
    # A decode step reading only the weights at full bandwidth: 141 GB / 21.2 TB/s.
    tpot_ms = 1000 * l70.weight_bytes / roofline.bandwidth
    figures = {"completed": 10, "median_tpot_ms": tpot_ms, "duration": 10.0,
               "total_input_tokens": 0, "total_output_tokens": 0, "output_throughput": 0.0}
    got = roofline.achieved(figures)
    assert got["roofline_decode_bw_pct"] == pytest.approx(100.0)
    assert got["roofline_prefill_compute_pct"] == 0.0
    # Twice the TPOT, plus 100 tokens/s whose sequences hold 2,000 tokens of KV each.
    figures.update(median_tpot_ms=2 * tpot_ms, total_input_tokens=15_000,
                   total_output_tokens=10_000, output_throughput=100.0)
    kv = 100.0 * (1500 + 1000 / 2) * 327_680 / roofline.bandwidth
    got = roofline.achieved(figures)
    assert got["roofline_decode_bw_pct"] == pytest.approx(100 * (0.5 + kv))
    prefill = 15_000 * l70.token_flops(1500 / 2)[0] / (peaks.bf16_tflops * 1e12 * 4) / 10.0
    assert got["roofline_prefill_compute_pct"] == pytest.approx(100 * prefill)
    assert roofline.achieved({"completed": 0}) == {}
