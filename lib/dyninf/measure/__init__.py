"""Measurement of trained networks: measured time against the ideal from MACs (``latency``), the
lesion study (``lesion``), adversarial images (``attacks``), standard errors and when a difference
counts (``uncertainty``), and networks judged against the static frontier (``frontier``).

May import: dyninf.decisions, dyninf.deciders, dyninf.network, dyninf.data, dyninf.utils.
"""
