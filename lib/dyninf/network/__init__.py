"""The network and its execution modes: the residual backbone (``backbones``), how a block runs
for the images that keep it, gathered or masked (``skipping``), batch norm folded for inference
(``folding``), a backbone with a decider (``dynamic``), the MACs of what runs (``cost``), inference
over a tensor of images (``inference``) and its number format (``precision``).

May import: dyninf.decisions, dyninf.data, dyninf.utils.
"""
