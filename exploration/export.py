"""Exports of the decision log for external tools: obp's bandit-feedback dict and VW's dsjson.

Both start from logged :class:`~coldstart.decisions.Decision` s and the slot rewards of
:func:`exploration.ope.join_rewards` (``{(decision_id, position): reward}``).

* :func:`to_obp` — one round per filled slot (the slate estimand of :mod:`exploration.ope.base`):
  ``action`` indexes ``action_ids`` (every item seen as a candidate), ``position`` is the slot,
  ``pscore`` the logged (conditional) propensity, ``context`` the decision's numeric context (strings
  one-hot as ``key=value``) and ``action_context`` each item's logged candidate features averaged over
  the decisions it appeared in; ``pi_b`` (optional) is the logging pmf at each round's position.
* :func:`to_dsjson` — VW's decision-service JSON, one line per decision (``per="decision"``: the label
  is slot 0, ``a``/``p`` list every candidate with the chosen one first) or per slot (``per="slot"``:
  the candidates left after the earlier slots, with the renormalised pmf). Features use the
  namespaces of ``exploration.policies.vw`` (``C`` context, ``U`` user presence, ``A`` candidate
  features, ``I`` item id) so a model trained on the export reads the same features as the live
  policy. ``_label_cost`` is ``-reward`` (VW minimises cost).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from coldstart.decisions import Decision
from coldstart.errors import InvalidInputError
from exploration.ope.log import BanditLog, SlotKey
from exploration.ope.targets import LoggedPolicy

_VW_BAD = str.maketrans({" ": "_", "\t": "_", "\n": "_", ":": "_", "|": "_"})


def _context_columns(decisions: Sequence[Decision]) -> list[str]:
    names: set[str] = set()
    for d in decisions:
        for k, v in d.context.items():
            names.add(f"{k}={v}" if isinstance(v, str) else k)
    return sorted(names)


def _context_vector(d: Decision, col: Mapping[str, int]) -> NDArray[np.float64]:
    x = np.zeros(len(col))
    for k, v in d.context.items():
        if isinstance(v, str):
            x[col[f"{k}={v}"]] = 1.0
        else:
            x[col[k]] = float(v)
    return x


def to_obp(
    decisions: Sequence[Decision],
    rewards: Mapping[SlotKey, float],
    *,
    default_reward: float | None = None,
    include_pi_b: bool = True,
    max_pi_b_cells: int = 50_000_000,
) -> dict[str, Any]:
    """obp's bandit-feedback dict of the logged slots.

    Parameters
    ----------
    decisions, rewards
        The log and the slot rewards; a missing reward is an error unless ``default_reward`` is set.
    include_pi_b
        Add ``pi_b``, ``(n_rounds, n_actions, len_list)`` float64: the logging pmf over all items at
        each round's position (renormalised over the items still available), copied to every position
        so that each ``pi_b[i, :, j]`` sums to 1 (obp's check). Skipped when larger than
        ``max_pi_b_cells``.

    Returns
    -------
    ``n_rounds``, ``n_actions``, ``len_list`` (int); ``action``, ``position`` (int64, ``(n_rounds,)``);
    ``reward``, ``pscore`` (float64, ``(n_rounds,)``); ``context`` ``(n_rounds, n_context)``;
    ``action_context`` ``(n_actions, n_action_features)``; ``action_ids``, ``context_names``,
    ``action_context_names`` (lists of str), ``decision_id`` (``(n_rounds,)`` object); ``pi_b``.
    """
    log = BanditLog.from_decisions(decisions, rewards, default_reward=default_reward)
    if log.n_rounds == 0:
        raise InvalidInputError("decisions", len(decisions), "no filled slots to export")
    action_ids = sorted({c.item_id for d in log.decisions for c in d.candidates})
    action_index = {a: i for i, a in enumerate(action_ids)}
    feat_names = sorted({k for d in log.decisions for c in d.candidates for k in c.features})
    feat_col = {k: i for i, k in enumerate(feat_names)}
    sums = np.zeros((len(action_ids), len(feat_names)))
    seen = np.zeros(len(action_ids))
    for d in log.decisions:
        for c in d.candidates:
            a = action_index[c.item_id]
            seen[a] += 1
            for k, v in c.features.items():
                sums[a, feat_col[k]] += v
    action_context = sums / np.maximum(seen, 1)[:, None]
    ctx_names = _context_columns(log.decisions)
    ctx_col = {k: i for i, k in enumerate(ctx_names)}
    ctx_by_decision = np.array([_context_vector(d, ctx_col) for d in log.decisions]).reshape(
        log.n_decisions, len(ctx_names)
    )
    action = np.array(
        [
            action_index[log.decisions[int(di)].candidates[int(ci)].item_id]
            for di, ci in zip(log.decision_index, log.chosen, strict=True)
        ],
        dtype=np.int64,
    )
    len_list = int(log.position.max()) + 1
    out: dict[str, Any] = {
        "n_rounds": log.n_rounds,
        "n_actions": len(action_ids),
        "len_list": len_list,
        "action": action,
        "position": log.position.copy(),
        "reward": log.reward.copy(),
        "pscore": log.pscore.copy(),
        "context": ctx_by_decision[log.decision_index],
        "action_context": action_context,
        "action_ids": action_ids,
        "context_names": ctx_names,
        "action_context_names": feat_names,
        "decision_id": np.array([log.decisions[int(i)].decision_id for i in log.decision_index], object),
    }
    if include_pi_b and log.n_rounds * len(action_ids) * len_list <= max_pi_b_cells:
        out["pi_b"] = obp_action_dist(log, LoggedPolicy(), action_ids)
    return out


def obp_action_dist(log: BanditLog, policy: Any, action_ids: Sequence[str]) -> NDArray[np.float64]:
    """A target policy's ``action_dist`` in obp's layout, ``(n_rounds, n_actions, len_list)``.

    ``policy`` is an :class:`exploration.ope.TargetPolicy`; round ``i``'s pmf at its position (given the
    logged prefix) is copied to every position, so each ``[i, :, j]`` sums to 1 and obp, which reads
    ``[i, :, position[i]]``, sees the same probabilities as :func:`exploration.ope.evaluate`.
    """
    index = {a: i for i, a in enumerate(action_ids)}
    len_list = int(log.position.max()) + 1
    dist = np.zeros((log.n_rounds, len(action_ids), len_list))
    for r in range(log.n_rounds):
        d = log.decisions[int(log.decision_index[r])]
        p = policy.slot_pmf(d, log.available(r))
        cols = [index[c.item_id] for c in d.candidates]
        dist[r, cols, :] = np.asarray(p)[:, None]
    return dist


def _vw_name(s: str) -> str:
    return s.translate(_VW_BAD) or "_"


def _shared(d: Decision) -> dict[str, Any]:
    ctx: dict[str, float] = {}
    has_user = 0.0
    for k, v in d.context.items():
        if k == "has_user":
            has_user = float(v) if not isinstance(v, str) else float(v not in ("", "0", "false"))
        elif isinstance(v, str):
            ctx[f"{_vw_name(k)}={_vw_name(v)}"] = 1.0
        elif v != 0.0 and math.isfinite(v):
            ctx[_vw_name(k)] = float(v)
    return {"C": ctx, "U": {"user": has_user, "nouser": 1.0 - has_user}}


def _action(features: Mapping[str, float], item_id: str) -> dict[str, Any]:
    feats = {_vw_name(k): float(v) for k, v in features.items() if v != 0.0 and math.isfinite(v)}
    return {"A": feats, "I": {f"id={_vw_name(item_id)}": 1.0}}


def _line(
    d: Decision,
    shown: Sequence[int],
    probs: Sequence[float],
    chosen: int,
    pscore: float,
    reward: float,
    event_id: str,
) -> str:
    """One dsjson line: ``shown`` candidate indices (action ``i`` is ``shown[i]``), ``chosen`` their index."""
    order = [chosen] + [i for i in range(len(shown)) if i != chosen]
    obj = {
        "_label_cost": -reward,
        "_label_probability": pscore,
        "_label_Action": chosen + 1,
        "_labelIndex": chosen,
        "o": [{"v": reward, "EventId": event_id, "ActionTaken": False}],
        "Timestamp": d.ts.isoformat().replace("+00:00", "Z"),
        "Version": "1",
        "EventId": event_id,
        "a": [i + 1 for i in order],
        "c": {
            **_shared(d),
            "_multi": [_action(d.candidates[c].features, d.candidates[c].item_id) for c in shown],
        },
        "p": [float(probs[i]) for i in order],
        "VWState": {"m": d.model_version},
    }
    return json.dumps(obj, separators=(",", ":"))


def iter_dsjson(
    decisions: Sequence[Decision],
    rewards: Mapping[SlotKey, float],
    *,
    per: Literal["decision", "slot"] = "decision",
    default_reward: float | None = None,
) -> Iterator[str]:
    """VW dsjson lines of the log (see the module docstring); no trailing newline."""
    if per not in ("decision", "slot"):
        raise InvalidInputError("per", per, "must be 'decision' or 'slot'")
    positions = [0] if per == "decision" else None
    log = BanditLog.from_decisions(decisions, rewards, positions=positions, default_reward=default_reward)
    for r in range(log.n_rounds):
        d = log.decisions[int(log.decision_index[r])]
        first = np.array([c.probability for c in d.candidates])
        avail = log.available(r)
        shown = [int(i) for i in np.flatnonzero(avail)]
        p = first[shown]
        p = p / p.sum() if p.sum() > 0 else np.full(len(shown), 1.0 / len(shown))
        chosen = shown.index(int(log.chosen[r]))
        event = d.decision_id if per == "decision" else f"{d.decision_id}/{int(log.position[r])}"
        yield _line(d, shown, p.tolist(), chosen, float(log.pscore[r]), float(log.reward[r]), event)


def to_dsjson(
    decisions: Sequence[Decision],
    rewards: Mapping[SlotKey, float],
    *,
    per: Literal["decision", "slot"] = "decision",
    default_reward: float | None = None,
) -> str:
    """All dsjson lines of :func:`iter_dsjson`, newline-terminated."""
    lines = iter_dsjson(decisions, rewards, per=per, default_reward=default_reward)
    return "".join(f"{line}\n" for line in lines)
