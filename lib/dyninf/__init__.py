"""Adaptive Inference: the tested library behind the course notebooks.

One residual backbone (``dyninf.backbones``) that takes per-image decisions (``dyninf.decisions``),
the deciders that make them (``dyninf.deciders``), CIFAR-10 (``dyninf.data``), cost counting
(``dyninf.cost``), inference (``dyninf.inference``), one training loop (``dyninf.fitting``), named
profiles (``dyninf.profiles``), the course's networks trained per profile (``dyninf.networks``) and its
report (``dyninf.report``). Imports point one way:
the decision protocol and the backbone at the bottom, deciders above them, training and the
notebooks' helpers on top (tests/test_imports.py checks the bottom stays light).
"""
import logging

__version__ = "0.1.0"

# torch.utils.benchmark imports torch's C++-extension builder, which warns on every CPU machine with
# a CUDA toolkit path but no CUDA runtime; the course builds no extensions, so that warning is noise
# in every executed notebook.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
