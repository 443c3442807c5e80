"""The property tests' strategies: metahp's public ones (metahp.testing.strategies) and the tests' grid."""

from metahp.testing.strategies import (  # noqa: F401  re-exported for the property tests
    advantages,
    batches,
    group_advantages,
    log_likelihoods,
    logits,
    sequence_batches,
)

VALUES = (0.6, 0.8, 1.0, 1.2, 1.5)
K = len(VALUES)
