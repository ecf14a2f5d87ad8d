"""Adaptive Inference: the tested library behind the course notebooks.

One residual backbone (``dyninf.backbones``) that takes per-image decisions, the deciders that
make them (``dyninf.deciders``), CIFAR-10 (``dyninf.data``), cost counting (``dyninf.cost``),
one training loop (``dyninf.train``), named profiles (``dyninf.profiles``) and the course's
report (``dyninf.report``).
"""
__version__ = "0.1.0"
