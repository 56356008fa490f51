"""How far each GPU result is from the hardware: its fractions of the roofline (decode HBM
bandwidth, prefill compute; hosts/roofline.py) as a report section, or why there are none."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

HEADER = ["test", "decode HBM bandwidth used", "prefill compute used", "roofline (server GPUs)"]
MEANING = ("Decode bandwidth: the weights read once per decode step of median TPOT, plus the "
           "KV cache of the batch running (output throughput x TPOT sequences), over the GPUs' "
           "peak HBM bandwidth. Prefill compute: the prompt tokens' FLOPs (2 x parameters plus "
           "attention) over the run's duration, against peak dense compute. Upper bounds of "
           "the hardware, not targets: serving engines reach a fraction of either.")


class _Row(Protocol):
    test: str
    result: Any

    def medians(self) -> dict[str, float]: ...


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


def rows(tests: Sequence[_Row]) -> tuple[list[list[str]], str]:
    """One row per test with roofline fractions; else why no result has them (the first
    reason a result records, e.g. the cpu host's), or empty when nothing says."""
    out: list[list[str]] = []
    why = ""
    for t in tests:
        if t.result is None:
            continue
        fit = t.result.doc.get("host_fit") or {}
        med = t.medians()
        roof = fit.get("roofline") or {}
        if "roofline_decode_bw_pct" in med or "roofline_prefill_compute_pct" in med:
            out.append([t.test, _pct(med.get("roofline_decode_bw_pct")),
                        _pct(med.get("roofline_prefill_compute_pct")),
                        f"{roof.get('gpus')} x {roof.get('accelerator')}: "
                        f"{float(roof.get('peak_pflops_bf16') or 0):.3g} PFLOP/s BF16, "
                        f"{float(roof.get('hbm_tb_s') or 0):.3g} TB/s"])
        elif fit.get("why") and not why:
            why = str(fit["why"])
    return out, why
