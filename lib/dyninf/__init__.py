"""Adaptive Inference: the tested library behind the course notebooks.

Each package's role is in its folder's name, each may import only the packages below it (its
``__init__`` says which; tests/test_imports.py checks it), from the bottom up:

- ``dyninf.decisions``: the decision protocol, per image and block, at the very bottom;
- ``dyninf.utils``: files, paths, devices;
- ``dyninf.data``: CIFAR-10 and its batches;
- ``dyninf.network``: the residual backbone, its masked and skipped execution modes, cost, inference;
- ``dyninf.deciders``: stochastic depth, AIG, GaterNet and BlockDrop, what decide for the backbone;
- ``dyninf.measure`` and ``dyninf.training``: measuring trained networks, and the training loop;
- ``dyninf.course``: profiles, recipes, the trained networks, the notebooks' helpers;
- ``dyninf.tools``: the command lines (make course, the classroom edition, the GPU check).
"""
import logging

__version__ = "0.1.0"

# torch.utils.benchmark imports torch's C++-extension builder, which warns on every CPU machine with
# a CUDA toolkit path but no CUDA runtime; the course builds no extensions, so that warning is noise
# in every executed notebook.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
