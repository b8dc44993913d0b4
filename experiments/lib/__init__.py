"""Shared measurement code for the experiments (torch, numpy and the standard library only).

Measuring: ``memory`` (peak and live bytes by category, around torch's MemTracker), ``saved``
(bytes autograd saves for backward), ``timing`` (``torch.utils.benchmark``), ``flops``
(``FlopCounterMode``), ``threads`` (CPU thread pinning), ``load`` (other tasks competing for the CPU).
Models and data: ``gpt`` (a plain GPT decoder layer and model),
``mbv2`` (a small MobileNetV2-like CNN), ``digits`` (the shipped UCI digits), ``quant`` (int8
quantization and the integer graph), ``budget_search`` (sparse-update search).
Predictions, pure Python so ``handbook estimate`` needs no torch: ``formulas``, ``estimator``,
``model_shapes``; ``units`` (unit choices for summaries, torch-free).
Plumbing: ``host`` (what this machine is), ``cli`` (``python -m experiments.<name>``),
``describe`` (what the runner needs to know before it runs anything).
"""
