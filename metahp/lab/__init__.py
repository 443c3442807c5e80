"""The lab: where metahp's method is studied end to end on a CPU.

The reference GRPO trainer (``grpo``), verifiable tasks (``tasks``), tiny local models and SmolLM2 (``models``),
warm starts (``warmstart``), ``metahp demo`` (``demo``, ``cli``) and the model-free studies (``synthetic``,
``baselines``). It builds on the core (metahp's knobs, rewards, updaters, policies) and may use transformers,
gymnasium, matplotlib and tqdm; the core never imports it (tests/test_packaging.py checks that ``import metahp``
loads none of them).
"""
