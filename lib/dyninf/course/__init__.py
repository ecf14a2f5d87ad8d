"""The course: its profiles (``profiles``) and each method's recipe per profile (``recipes``), the
cache of trained networks (``trained``) and the list of trainings a profile needs
(``trainings``, with a command line), a profile's trained networks as points (``points``), the
notebooks' helpers (``notebook``, ``display``), the papers' figures (``published``) and the graded
tasks' library answers (``tasks``).

May import: dyninf.decisions, dyninf.deciders, dyninf.network, dyninf.measure, dyninf.training,
dyninf.data, dyninf.utils.
"""
