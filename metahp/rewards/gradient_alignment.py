"""The learning rate's signal: the alignment of successive policy gradients (the hypergradient sign of Baydin et
al. 2018, "Online learning rate adaptation with hypergradient descent").

For plain gradient steps theta_t = theta_{t-1} - eta g_{t-1}, the derivative of the loss after the step with respect
to the rate is dL(theta_t)/d eta = -g_t . g_{t-1}: when successive gradients point the same way, a larger step would
have lowered the loss more. With c_t = cos(g_t, g_{t-1}), measured by the trainer (``measured["grad_alignment"]``),
candidate multiplier v_k scores

    a_k = c_t * log v_k

so aligned gradients (c_t > 0) move a softmax policy toward larger multipliers and opposed ones (c_t < 0, the step
overshot) toward smaller. The cosine, not the dot product, keeps the signal in [-1, 1] whatever the gradient's scale.
The first step has no previous gradient (measured None): the feedback is 0 there, no move.
"""

from __future__ import annotations

from metahp.rewards._measured import MeasuredSignal, cosine_signal


class GradientAlignment(MeasuredSignal):
    """a_k = cos(g_t, g_{t-1}) * log v_k, for the learning-rate multiplier (softmax_gradient, per batch)."""

    name = "gradient_alignment"
    measurement = "grad_alignment"
    needs_measured = ("grad_alignment",)
    fitted_knobs = ("learning_rate",)

    def signal(self, value: float) -> float:
        return cosine_signal(value, "grad_alignment", "this step's gradient and the previous step's")
