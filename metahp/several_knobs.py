"""What every adapter needs when several knobs are adapted at once: checking the knob list, naming metrics.

Everything here reads the knob registry (``metahp.knobs.KNOBS``): a registered knob is checked like a built-in.
"""

from __future__ import annotations

from collections.abc import Sequence

from metahp.errors import ConfigError
from metahp.knobs import KNOBS


def check_knob_names(names: Sequence[str], supported: Sequence[str], values, who: str) -> None:
    """Refuse unsupported, repeated or jointly unscorable knobs, and a shared ``values=`` for several knobs."""
    for name in names:
        if name not in supported:
            raise ConfigError(f"{who} can adapt {list(supported)}, not {name!r}.")
    if len(set(names)) != len(names):
        raise ConfigError(f"knob={list(names)} names a knob twice; list each knob once.")
    truncations = [n for n in names if n in KNOBS and KNOBS[n].role == "truncates"]
    if len(truncations) > 1:
        raise ConfigError(f"adapting {truncations} together is not supported: samplers apply truncations in sequence "
                          f"and metahp scores one truncation at a time. Adapt one truncation knob (with the "
                          f"temperature if you like).")
    if len(names) > 1 and values is not None:
        raise ConfigError("with several knobs pass each grid in a Knob instance, e.g. knob=(Temperature([0.7, 1.0]), "
                          "TopP([0.8, 0.95])), not values=.")


def name_metrics(metrics: dict[str, float], knob: str) -> dict[str, float]:
    """metahp/prob/0.9 -> metahp/prob/top_p=0.9: with several knobs a bare candidate value is ambiguous."""
    return {k.replace("/prob/", f"/prob/{knob}=").replace("/advantage/", f"/advantage/{knob}="): v
            for k, v in metrics.items()}
