"""The JSON summary of benchmarks/slots.py: the first rate's phase at the top level, the other rates,
the baselines (in-process Feast read, Feast's feature server, the HTTP floor) and their ratios."""

from __future__ import annotations

import argparse
import os
from typing import Any

from loadgen import pct


def saturated(rate: float, phase: dict[str, Any]) -> bool:
    """A phase that fell behind its offered rate (its latencies then measure the queue, not the server)."""
    return bool(phase["achieved_rps"] < 0.98 * rate)


def summary(
    args: argparse.Namespace,
    *,
    runs: list[tuple[float, dict[str, Any]]],
    feast_ms: list[float],
    in_process_ms: list[float],
    floors: dict[float, dict[str, Any]],
    feature_server: dict[float, dict[str, Any]],
    measured: dict[str, Any],
) -> dict[str, Any]:
    """The benchmark's one JSON object from its phases (``runs``: ``(rate, load-generator result)``)."""
    feast_p99 = pct(feast_ms, 99)
    rate, lg = runs[0]

    def baseline(f: dict[str, Any]) -> dict[str, Any]:
        """The summary of a baseline's phase."""
        return {
            "achieved_rps": round(f["achieved_rps"], 1),
            "p50_ms": round(f["p50_ms"], 3),
            "p99_ms": round(f["p99_ms"], 3),
            "send_lag_p99_ms": round(f["send_lag_p99_ms"], 3),
            "errors": f["errors"],
            "cpu_ms_per_request": f["cpu_ms_per_request"],
        }

    def floor(r: float) -> dict[str, Any]:
        """The do-nothing server's phase at rate ``r``, and its ratio to the in-process read."""
        f = floors.get(r)
        if f is None:
            return {}
        return {"http_floor": {**baseline(f), "ratio_p99": round(f["p99_ms"] / feast_p99, 3)}}

    def over_http(r: float, x: dict[str, Any]) -> dict[str, Any]:
        """The feature-server phase at rate ``r`` and the slot phase's p99 against it."""
        f = feature_server.get(r)
        if f is None:
            return {}
        return {
            "feature_server": {**baseline(f), "connections_per_worker": f["connections_per_worker"]},
            "ratio_p99_feature_server": round(x["p99_ms"] / f["p99_ms"], 3),
            "feature_server_saturated": saturated(r, f),
        }

    result = {
        "p50_ms": round(lg["p50_ms"], 3),
        "p99_ms": round(lg["p99_ms"], 3),
        "achieved_rps": round(lg["achieved_rps"], 1),
        "target_rps": rate,
        "feast_read_p50_ms": round(pct(feast_ms, 50), 3),
        "feast_read_p99_ms": round(feast_p99, 3),
        "ratio_p99": round(lg["p99_ms"] / feast_p99, 3),
        **(
            {
                "in_process_p50_ms": round(pct(in_process_ms, 50), 3),
                "in_process_p99_ms": round(pct(in_process_ms, 99), 3),
                "in_process_ratio_p99": round(pct(in_process_ms, 99) / feast_p99, 3),
            }
            if in_process_ms
            else {}
        ),
        **over_http(rate, lg),
        **floor(rate),
        "cpu_ms_per_request": lg["cpu_ms_per_request"],
        "connections_per_worker": lg["connections_per_worker"],
        "p90_ms": round(lg["p90_ms"], 3),
        "max_ms": round(lg["max_ms"], 3),
        "send_lag_p99_ms": round(lg["send_lag_p99_ms"], 3),
        "requests": lg["n"],
        "errors": lg["errors"],
        "other_rates": [
            {
                "target_rps": r,
                "achieved_rps": round(x["achieved_rps"], 1),
                "p50_ms": round(x["p50_ms"], 3),
                "p99_ms": round(x["p99_ms"], 3),
                "send_lag_p99_ms": round(x["send_lag_p99_ms"], 3),
                "ratio_p99": round(x["p99_ms"] / feast_p99, 3),
                **over_http(r, x),
                **floor(r),
                "cpu_ms_per_request": x["cpu_ms_per_request"],
                "connections_per_worker": x["connections_per_worker"],
                "errors": x["errors"],
            }
            for r, x in runs[1:]
        ],
        "items": args.items,
        "users": args.users,
        "vectors": args.vectors,
        "k": args.k,
        "m": args.m,
        "decision_log": args.decision_log,
        "workers": args.workers,
        "listen": "shared_socket" if args.shared_socket else "round_robin",
        "max_rate_meeting_p99": max(
            (r for r, x in runs if x["p99_ms"] <= 10.0 and x["achieved_rps"] >= 0.95 * r), default=None
        ),
        "seed_s": round(measured["seed_s"], 1),
        "pool": measured["pool"],
        "snapshot_s": None if measured["snapshot_s"] is None else round(measured["snapshot_s"], 1),
        "ready_s": round(measured["ready_s"], 1),
        "rss_mb": measured["rss"]["total"],
        "rss_mb_per_process": measured["rss"]["processes"],
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "targets": {"p99_ms": 10.0, "ratio_p99": 3.0, "rps": 300.0},
        "meets_targets": bool(lg["p99_ms"] <= 10.0 and lg["p99_ms"] / feast_p99 <= 3.0),
        "meets_targets_feature_server": (
            None
            if rate not in feature_server
            else bool(
                lg["p99_ms"] <= 10.0
                and lg["achieved_rps"] >= 0.98 * rate
                and lg["p99_ms"] / feature_server[rate]["p99_ms"] <= 3.0
                and not saturated(rate, feature_server[rate])
            )
        ),
        "calibration_ms": round(measured["calibration_ms"], 1),
    }
    return result
