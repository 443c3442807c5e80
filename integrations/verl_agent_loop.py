"""The agent loop that gives each verl rollout request its own temperature (a verl plug-in).

verl builds one sampling-settings dict per agent-loop worker from its frozen copy of the rollout config, then runs
each row through the agent loop the row names (``agent_name``), passing the row's non-tensor columns as keywords.
metahp's adapter names this loop on every training row and adds two columns: the temperature drawn for the row (on
verl's v1 trainer, per completion: the prompt's ``rollout.n`` values, one per session) and the loop the row would
have run. This loop puts the temperature into that request's sampling settings and hands
the request to that loop, unchanged otherwise: single-turn, tool and custom loops all keep working.

It is registered with verl's agent-loop registry when verl starts in any process (metahp declares it as a
``verl.plugins`` entry point, which ``import verl`` loads), so the rollout workers, on every node where metahp is
installed, know it.
"""

from __future__ import annotations

from typing import Any

from . import verl_0_9 as verl_compat
from .verl import row_value

NAME = "metahp_sampling"
VALUE_COLUMN = "metahp_temperature"  # the row's temperature
INNER_COLUMN = "metahp_agent_name"  # the loop the row runs inside this one


class MetahpSamplingAgentLoop(verl_compat.agent_loop_base()):
    """Runs the row's own agent loop with the row's temperature in its sampling settings."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init = (args, kwargs)  # the inner loop is built with the same arguments verl built this one with

    async def run(self, sampling_params: dict[str, Any], **kwargs):
        import hydra

        temperature = row_value(kwargs.pop(VALUE_COLUMN), kwargs.get(verl_compat.V1_SESSION_KWARG))
        inner_name = str(kwargs.pop(INNER_COLUMN))
        registry = verl_compat.agent_loop_registry()
        if inner_name not in registry or inner_name == NAME:
            raise RuntimeError(f"metahp: the row's agent loop {inner_name!r} is not registered with verl "
                               f"(registered: {sorted(registry)}).")
        args, init_kwargs = self._init
        inner = hydra.utils.instantiate(registry[inner_name], *args, **init_kwargs)
        return await inner.run({**sampling_params, "temperature": temperature}, **kwargs)


def register() -> None:
    verl_compat.agent_loop_registry()[NAME] = {"_target_": f"{__name__}.{MetahpSamplingAgentLoop.__qualname__}"}


register()
