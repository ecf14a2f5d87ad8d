"""Training: one loop for every network of the course, seeded, with checkpoints it resumes from
(``loop``), also in several processes under torchrun (``distributed``).

May import: dyninf.decisions, dyninf.network, dyninf.data, dyninf.utils.
"""
