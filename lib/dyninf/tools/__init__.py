"""Tools with a command line, on top of the course: the notebook runner (``runner``: make course),
its report (``report``), the seed spread (``spread``), the stored reference results (``reference``),
the classroom edition and its grading in a sandbox (``classroom``, ``grading``, ``sandbox``) and the
GPU check (``gpu_check``), and the course as a website (``website``: make site).

May import: every other package of dyninf.
"""
