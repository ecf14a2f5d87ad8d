"""Adaptive Inference: the tested library behind the course notebooks.

One residual backbone (``dyninf.backbones``) that takes per-image decisions, the deciders that
make them (``dyninf.deciders``), CIFAR-10 (``dyninf.data``), cost counting (``dyninf.cost``),
one training loop (``dyninf.train``), named profiles (``dyninf.profiles``) and the course's
report (``dyninf.report``).
"""
import logging

__version__ = "0.1.0"

# torch.utils.benchmark imports torch's C++-extension builder, which warns on every CPU machine with
# a CUDA toolkit path but no CUDA runtime; the course builds no extensions, so that warning is noise
# in every executed notebook.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
