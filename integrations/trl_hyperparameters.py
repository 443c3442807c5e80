"""The TRL adapter's hyperparameter knobs (learning_rate, beta, epsilon): every copy TRL 1.16 keeps of each, the
learning-rate multiplier on the optimizer transformers builds, and what each knob needs of the run.

Kept apart from integrations/trl.py, which holds the sampling knobs' copies and TRL's generation and scoring; the
TRL-private attribute names are in ``trl_1_16.RUN_TIME_HYPERPARAMETERS``. The adapter mixes this in.
"""

from __future__ import annotations

from metahp.errors import ConfigError
from metahp.knobs import KNOBS
from metahp.knobs.learning_rate import LearningRateScale

from . import trl_1_16 as trl_compat


class HyperparameterCopies:
    """Mixed into TRLAdapter: registers the copies of its hyperparameter knobs and drives the LR multiplier."""

    def _init_hyperparameters(self, trainer, names) -> None:
        self.learning_rate_scale: LearningRateScale | None = None  # on trainer.optimizer, built in train()
        self._learning_rate_multiplier = 1.0
        for name in names:
            self._hyperparameter_copies(trainer, name)

    def _hyperparameter_copies(self, trainer, name: str) -> None:
        """Every copy TRL keeps of a hyperparameter: the attributes its loss reads at run time
        (``trl_1_16.RUN_TIME_HYPERPARAMETERS``; epsilon_high only where the run is symmetric, epsilon_high unset) and
        the GRPOConfig field, for user code and callbacks; the learning-rate multiplier is held here and applied to
        every optimizer step (``LearningRateScale``, on the optimizer transformers builds in train())."""
        if name == "learning_rate":
            self.copies.add(name, "optimizer.learning_rate", lambda: self._learning_rate_multiplier,
                            self._set_learning_rate_multiplier)
            return
        for attr in trl_compat.RUN_TIME_HYPERPARAMETERS[name]:
            if attr == "epsilon_high" and trainer.args.epsilon_high is not None:
                continue  # an asymmetric run (DAPO's clip-higher) keeps its own upper bound
            self.copies.attribute(name, f"trainer[{attr}].{name}", trainer, attr)
        self.copies.attribute(name, f"args.{name}", trainer.args)

    def _set_learning_rate_multiplier(self, multiplier: float) -> None:
        self._learning_rate_multiplier = float(multiplier)
        if self.learning_rate_scale is not None:
            self.learning_rate_scale.multiplier = self._learning_rate_multiplier

    def _scale_learning_rate(self) -> None:
        """Hook the multiplier onto the optimizer transformers built for this train() (once per optimizer)."""
        optimizer = getattr(self.trainer, "optimizer", None)
        if optimizer is None or (self.learning_rate_scale is not None
                                 and self.learning_rate_scale.optimizer is optimizer):
            return
        if self.learning_rate_scale is not None:
            self.learning_rate_scale.remove()
        self.learning_rate_scale = LearningRateScale(optimizer, self._learning_rate_multiplier)

    def _remove_learning_rate_scale(self) -> None:
        if self.learning_rate_scale is not None:
            self.learning_rate_scale.remove()
            self.learning_rate_scale = None


def configured_value(trainer, name: str) -> float:
    """The value the loss reads when metahp does not set it (the learning-rate multiplier: 1)."""
    if name == "learning_rate":
        return KNOBS[name].off_value
    return float(getattr(trainer, trl_compat.RUN_TIME_HYPERPARAMETERS[name][0]))


def check_hyperparameter(trainer, knob: str) -> None:
    """What a hyperparameter needs of the run, refused at attach: a reference model for beta, a clipped loss for
    epsilon, an optimizer metahp can scale for the learning rate."""
    args = trainer.args
    if knob == "beta" and float(trainer.beta) == 0.0:
        raise ConfigError("adapting beta needs a reference model, which TRL builds only when GRPOConfig.beta > 0 at "
                          "start-up (beta = 0 builds none and skips the reference log-probs); set beta > 0 in "
                          "GRPOConfig (e.g. 0.04). A candidate beta of 0 then switches the KL term off for a batch.")
    if knob == "epsilon" and getattr(args, "loss_type", "grpo") not in trl_compat.CLIPPED_LOSSES:
        raise ConfigError(f"loss_type={args.loss_type!r} does not clip the ratio to [1 - epsilon, 1 + epsilon], so "
                          f"epsilon means something else there (or nothing); adapt epsilon with a clipped loss "
                          f"{list(trl_compat.CLIPPED_LOSSES)}.")
    if knob == "learning_rate" and getattr(trainer, "is_deepspeed_enabled", False):
        raise ConfigError("adapting the learning rate with DeepSpeed is not supported: DeepSpeed steps its own "
                          "optimizer and scheduler inside the engine, where metahp's multiplier does not reach. Use "
                          "FSDP or plain DDP, or leave learning_rate out of knob=.")
