"""Shared measurement code for the experiments.

Submodules: ``memory`` (peak and live bytes by category), ``timing``
(``torch.utils.benchmark`` wrappers), ``flops`` (``FlopCounterMode``),
``models`` (small reference models), ``formulas`` (the analytic predictions;
pure Python so that ``handbook estimate`` needs no torch), ``host`` (what this
machine is), ``cli`` (the ``python -m experiments.<name>`` entry point) and
``describe`` (what the runner needs to know before running anything).
"""
