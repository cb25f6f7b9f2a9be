"""The learner kit: what a learner module (``agents/<name>.py`` or a plug-in) builds on.

- :mod:`pbrl.learn.api`: the plug-in contract (``AgentSpec``, ``FitContext``, the agent
  registry and loading, ``make_config``, field docs);
- :mod:`pbrl.learn.kit`: the pieces learners share (masked segment sums, Bradley-Terry
  segment losses, shuffle-per-epoch minibatches, the deterministic log-prob, ...);
- :mod:`pbrl.learn.nn`: network blocks; :mod:`pbrl.learn.iql`: the shared IQL core;
  :mod:`pbrl.learn.data`: dataset-to-tensor loading;
- :mod:`pbrl.learn.check`: the contract's conformance checks (``pbrl agents check``).

Learners import from here, never from one another.
"""
