"""The run layer: training one learner (``train``), evaluating it (``evaluate``), suites
(``suite``), the seed sweep (``runner``), tables and plots (``report``) and dataset
diagnosis (``diagnose``, which trains learners, so it sits here and not in ``datasets/``)."""
