"""Knobs: sampling settings metahp can adapt. One file per knob; add one export line below."""

from metahp.errors import ConfigError
from metahp.knobs.base import Knob
from metahp.knobs.min_p import MinP
from metahp.knobs.product import ProductKnob
from metahp.knobs.temperature import Temperature
from metahp.knobs.top_k import TopK
from metahp.knobs.top_p import TopP

KNOBS: dict[str, type[Knob]] = {cls.name: cls for cls in (Temperature, TopP, TopK, MinP)}


def make_knob(knob: str | Knob, values=None) -> Knob:
    """A knob instance from its name (``"temperature"``) or an instance (then ``values`` must be None)."""
    if isinstance(knob, Knob):
        if values is not None:
            raise ConfigError("pass candidate values either in the Knob instance or as values=, not both.")
        return knob
    if knob not in KNOBS:
        raise ConfigError(f"unknown knob {knob!r}; valid knobs: {sorted(KNOBS)}.")
    return KNOBS[knob](values)


__all__ = ["KNOBS", "Knob", "MinP", "ProductKnob", "Temperature", "TopK", "TopP", "make_knob"]
