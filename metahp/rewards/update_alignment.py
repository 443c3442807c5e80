"""The learning rate's signal for an adaptive optimizer: the alignment of this step's gradient with the previous
optimizer *update* (the hypergradient of Baydin et al. 2018 for Adam, not for plain gradient steps).

With an optimizer whose step is theta_t = theta_{t-1} - eta u_{t-1} (Adam: u = m_hat / (sqrt(v_hat) + eps), AdamW also
decays), the derivative of the loss after the step with respect to the rate is

    dL(theta_t)/d eta = -g_t . u_{t-1},      u_{t-1} = (theta_{t-1} - theta_t) / eta

so a larger rate would have lowered the loss more when this step's gradient g_t still points along the previous
update. ``gradient_alignment`` compares g_t with g_{t-1} instead, which is the same thing only for plain gradient
descent: under Adam the update is normalised per coordinate and its direction differs from the gradient's. With
c_t = cos(g_t, theta_{t-1} - theta_t), measured by the trainer (``measured["update_alignment"]``), candidate
multiplier v_k scores

    a_k = c_t * log v_k

The first step has no previous update (measured None): the feedback is 0 there, no move.
"""

from __future__ import annotations

from metahp.rewards._measured import MeasuredSignal, cosine_signal


class UpdateAlignment(MeasuredSignal):
    """a_k = cos(g_t, theta_{t-1} - theta_t) * log v_k, for the learning-rate multiplier (softmax_gradient, per
    batch)."""

    name = "update_alignment"
    measurement = "update_alignment"
    needs_measured = ("update_alignment",)
    fitted_knobs = ("learning_rate",)

    def signal(self, value: float) -> float:
        return cosine_signal(value, "update_alignment", "this step's gradient and the previous optimizer step's "
                             "parameter change (theta before minus theta after)")
