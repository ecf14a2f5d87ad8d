"""Small utilities every layer may use: files written whole or not at all and locks (``io``), where
the repository, the data and the runs lie (``paths``), the default device and device names
(``devices``).

May import: nothing of dyninf.
"""
