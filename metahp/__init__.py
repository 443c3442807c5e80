"""metahp: learn an RL policy's sampling knobs online, while training it with GRPO (TAMPO and beyond)."""

from metahp.config import AdaptConfig
from metahp.errors import ConfigError, InputError, MetaHPError, StateError
from metahp.integrations import adapt
from metahp.knobs import KNOBS, Knob, MinP, Temperature, TopK, TopP, register_knob
from metahp.policy import GridMetaPolicy, MetaPolicy, meta_policy
from metahp.rewards import REWARDS, register_reward
from metahp.sparsemax import sparsemax
from metahp.updaters import UPDATERS, register_updater

__version__ = "0.1.0"

__all__ = [
    "KNOBS", "AdaptConfig", "REWARDS", "UPDATERS", "ConfigError", "GridMetaPolicy", "InputError", "Knob", "MetaHPError",
    "MetaPolicy", "MinP", "StateError", "Temperature", "TopK", "TopP", "adapt", "meta_policy", "register_knob",
    "register_reward", "register_updater", "sparsemax",
]
