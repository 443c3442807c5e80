"""TAMPO's meta-update, exactly as in the paper (see ../shared/TAMPO.md, step 2d-2e).

    e_k <- (1 - alpha) * e_k + alpha * a_k                       EMA of per-candidate advantages
    m_k  = (e_k - min_j e_j) / (max_j e_j - min_j e_j)           min-max
    pi_k = m_k / sum_j m_j

e starts at 0 (uniform); when max - min is ~0 the distribution is uniform. Note that min-max depends only on
the shape of e, not its size, and always gives the worst candidate probability 0.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field, validate_call

from metahp.updaters.base import Feedback, State, Updater, uniform

# Below this spread the EMA scores carry no ordering worth acting on: return uniform.
_FLAT = 1e-12


@validate_call
def tampo(alpha: Annotated[float, Field(gt=0, le=1, description="EMA rate; the paper's default")] = 0.05,
          ) -> Updater:
    """The TAMPO rule with EMA rate ``alpha`` (paper default 0.05; ablation 0.01 / 0.05 / 0.10)."""

    def init(values: tuple[float, ...]) -> State:
        return {"ema": np.zeros(len(values))}

    def update(state: State, feedback: Feedback) -> State:
        return {"ema": (1 - alpha) * state["ema"] + alpha * feedback.advantages}

    def probs(state: State) -> np.ndarray:
        e = state["ema"]
        spread = e.max() - e.min()
        if spread <= _FLAT * max(1.0, np.abs(e).max()):
            return uniform(len(e))
        m = (e - e.min()) / spread
        return m / m.sum()

    return Updater("tampo", "per_candidate", "nucleus", init, update, probs, {"alpha": alpha})
