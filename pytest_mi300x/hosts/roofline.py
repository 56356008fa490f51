"""The roofline: what a server's GPUs can do at most for a model, what a workload asks of
them, and how close a measured run came.

A model's shape comes from its ``config.json`` (the served folder's, else a shipped copy in
hosts/models/ named after the folder); the GPUs' peaks from the host profile (hosts/peaks.py).
Per token, a dense decoder does ``2 x`` its matmul parameters in FLOPs plus attention over its
context (``4 x layers x heads x head_dim`` per context token); a decode step reads every weight
once plus the KV cache of every running sequence. These are upper bounds on what hardware can
do, never a prediction: a workload that asks more than the roofline is impossible on that
host, one that asks less may still miss its targets.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_mi300x.hosts.peaks import Peaks

MODELS_DIR = Path(__file__).resolve().parent / "models"
"""Shipped config.json copies (source in each file's ``_source``), by the served folder's name."""

MEMORY_SHARE = 0.9
"""Of the GPUs' memory, what the engine takes (vLLM's gpu_memory_utilization default)."""

Lengths = Sequence[tuple[int, int]]
"""(prompt tokens, output tokens) per request."""


@dataclass(frozen=True)
class ModelShape:
    """A dense decoder's sizes, as its config.json gives them."""

    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool = False
    fp8_mlp_layers: int = 0
    """Layers whose feed-forward weights are FP8 (one byte each, FP8 GEMMs)."""
    source: str = ""

    @classmethod
    def from_config(cls, config: Mapping[str, Any], name: str, source: str) -> ModelShape:
        try:
            hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
            layers = int(config["num_hidden_layers"])
            shape = cls(name=name, hidden=hidden, layers=layers, heads=heads,
                        kv_heads=int(config.get("num_key_value_heads", heads)),
                        head_dim=int(config.get("head_dim") or hidden // heads),
                        intermediate=int(config["intermediate_size"]),
                        vocab=int(config["vocab_size"]),
                        tied=bool(config.get("tie_word_embeddings", False)),
                        fp8_mlp_layers=_fp8_mlp_layers(config, layers), source=source)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{source}: not a dense decoder's config.json ({exc!r} missing or "
                             "wrong); the roofline needs hidden_size, num_hidden_layers, "
                             "num_attention_heads, intermediate_size, vocab_size") from None
        return shape

    @property
    def attn_params(self) -> int:
        """One layer's attention projections (q, k, v, o)."""
        q = self.heads * self.head_dim
        return 2 * self.hidden * q + 2 * self.hidden * self.kv_heads * self.head_dim

    @property
    def mlp_params(self) -> int:
        return 3 * self.hidden * self.intermediate

    @property
    def params(self) -> int:
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        return self.layers * (self.attn_params + self.mlp_params + 2 * self.hidden) \
            + self.hidden + embeddings

    @property
    def weight_bytes(self) -> int:
        return 2 * self.params - self.fp8_mlp_layers * self.mlp_params

    def kv_bytes_per_token(self, kv_bytes: int = 2) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * kv_bytes

    def token_flops(self, context: float) -> tuple[float, float]:
        """(BF16, FP8) FLOPs of one token at ``context`` tokens before it: its matmuls and
        its attention over the context (the LM head included)."""
        fp8 = 2.0 * self.fp8_mlp_layers * self.mlp_params
        matmul = 2.0 * (self.layers * (self.attn_params + self.mlp_params)
                        + self.vocab * self.hidden)
        attention = 4.0 * self.layers * self.heads * self.head_dim * context
        return matmul - fp8 + attention, fp8

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params, "weight_bytes": self.weight_bytes,
                "kv_bytes_per_token": self.kv_bytes_per_token(), "layers": self.layers,
                "hidden": self.hidden, "fp8_mlp_layers": self.fp8_mlp_layers,
                "source": self.source}


def _fp8_mlp_layers(config: Mapping[str, Any], layers: int) -> int:
    quant = config.get("quantization_config") or {}
    if not isinstance(quant, Mapping) or "fp8" not in str(quant.get("quant_method", "")):
        return 0
    # Meta's FP8 checkpoints keep attention and the first and last layers in BF16.
    return max(0, layers - 2) if config.get("_fp8_scope") == "mlp-inner-layers" else layers


def model_shape(path: str, logical: str) -> ModelShape | None:
    """The served model's shape: its folder's config.json, else the shipped copy named after
    the folder; None when neither exists (or the config is not a dense decoder's)."""
    for candidate in (Path(path) / "config.json",
                      MODELS_DIR / f"{Path(path).name}.json" if path else None):
        if candidate is not None and candidate.is_file():
            try:
                config = json.loads(candidate.read_text())
                source = str(config.get("_source", candidate))
                return ModelShape.from_config(config, logical, source)
            except (OSError, ValueError):
                return None
    return None


@dataclass(frozen=True)
class Roofline:
    """What ``gpus`` accelerators of ``peaks`` can do at most for ``model``."""

    peaks: Peaks
    gpus: int
    model: ModelShape
    kv_bytes: int = 2
    """Bytes per KV-cache element: 2 (the model's BF16), 1 for an FP8 KV cache."""
    accelerator: str = "accelerator"

    @property
    def bandwidth(self) -> float:
        return self.peaks.hbm_tb_s * 1e12 * self.gpus

    @property
    def kv_per_token(self) -> int:
        return self.model.kv_bytes_per_token(self.kv_bytes)

    def compute_s(self, flops: tuple[float, float]) -> float:
        bf16, fp8 = flops
        return (bf16 / self.peaks.bf16_tflops + fp8 / self.peaks.fp8_tflops) / 1e12 / self.gpus

    def prefill_s(self, prompt: int) -> float:
        """A prompt's prefill at peak compute (attention at half its length on average)."""
        bf16, fp8 = self.model.token_flops(prompt / 2)
        return self.compute_s((bf16 * prompt, fp8 * prompt))

    def capacity_seqs(self, context: float) -> int:
        """Sequences of ``context`` tokens whose KV cache fits beside the weights."""
        free = self.peaks.hbm_gb * 1e9 * self.gpus * MEMORY_SHARE - self.model.weight_bytes
        return max(0, int(free // max(1.0, context * self.kv_per_token)))

    def step_s(self, batch: int, context: float) -> float:
        """One decode step of ``batch`` sequences at ``context``: whichever roof binds."""
        memory = (self.model.weight_bytes + batch * context * self.kv_per_token) / self.bandwidth
        bf16, fp8 = self.model.token_flops(context)
        return max(memory, self.compute_s((bf16 * batch, fp8 * batch)))

    def max_rate(self, lengths: Lengths, max_seqs: int | None = None) -> tuple[float, str]:
        """The highest request rate of these requests the GPUs could carry, and which roof
        sets it: ``compute`` (every token's FLOPs at peak) or ``bandwidth`` (decode steps of
        the largest batch that fits, each reading the weights and its batch's KV cache)."""
        prompt, output = _means(lengths)
        flops = [0.0, 0.0]
        for p, o in lengths:
            for part, (bf16, fp8) in ((p, self.model.token_flops(p / 2)),
                                      (o, self.model.token_flops(p + o / 2))):
                flops[0] += bf16 * part
                flops[1] += fp8 * part
        per_request = self.compute_s((flops[0], flops[1])) / max(1, len(lengths))
        compute = 1.0 / per_request if per_request > 0 else math.inf
        context = prompt + output / 2
        batch = self.capacity_seqs(context)
        if max_seqs is not None:
            batch = min(batch, max_seqs)
        if batch < 1 or output <= 0:
            return (0.0, "memory") if batch < 1 else (compute, "compute")
        bandwidth = batch / self.step_s(batch, context) / output
        return (compute, "compute") if compute <= bandwidth else (bandwidth, "bandwidth")

    def wave_s(self, lengths: Lengths, in_flight: int) -> float:
        """One wave of ``in_flight`` requests at the roofline: their prefills, then their
        longest output's decode steps at that batch."""
        prompt, _ = _means(lengths)
        longest = max((o for _, o in lengths), default=0)
        return (in_flight * self.prefill_s(round(prompt))
                + longest * self.step_s(in_flight, prompt + longest / 2))

    def achieved(self, figures: Mapping[str, float]) -> dict[str, float]:
        """How close a run came, in percent: ``roofline_decode_bw_pct``, the HBM bandwidth its
        decode steps used (weights once per step of median TPOT, plus the KV cache of the
        batch running, which Little's law gives as output throughput x TPOT), and
        ``roofline_prefill_compute_pct``, its prompt tokens' FLOPs over the run's duration
        against peak compute."""
        done = figures.get("completed") or 0
        tpot = (figures.get("median_tpot_ms") or 0.0) / 1000.0
        duration = figures.get("duration") or 0.0
        if not done or tpot <= 0 or duration <= 0:
            return {}
        prompt = figures.get("total_input_tokens", 0.0) / done
        output = figures.get("total_output_tokens", 0.0) / done
        out_rate = figures.get("output_throughput", 0.0)
        read = self.model.weight_bytes / tpot + out_rate * (prompt + output / 2) \
            * self.kv_per_token
        bf16, fp8 = self.model.token_flops(prompt / 2)
        prompt_tokens = figures.get("total_input_tokens", 0.0)
        used = self.compute_s((bf16 * prompt_tokens, fp8 * prompt_tokens)) / duration
        return {"roofline_decode_bw_pct": 100.0 * read / self.bandwidth,
                "roofline_prefill_compute_pct": 100.0 * used}

    def describe(self) -> dict[str, Any]:
        return {"gpus": self.gpus, "accelerator": self.accelerator, "peaks": self.peaks.describe(),
                "model": self.model.describe(), "kv_bytes": self.kv_bytes,
                "peak_pflops_bf16": self.peaks.bf16_tflops * self.gpus / 1000.0,
                "hbm_tb_s": self.peaks.hbm_tb_s * self.gpus}


def _means(lengths: Lengths) -> tuple[float, float]:
    n = max(1, len(lengths))
    return sum(p for p, _ in lengths) / n, sum(o for _, o in lengths) / n


ACHIEVED_FIGURES = ("roofline_decode_bw_pct", "roofline_prefill_compute_pct")
"""The figures ``Roofline.achieved`` adds to a GPU result (informational: never gated)."""
