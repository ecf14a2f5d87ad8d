# Sphinx configuration of the course's website. `make site` (dyninf.tools.website) stages the pages
# of one edition from an executed course and builds them with this file; it never executes a notebook.
# Sphinx with myst-nb and the book theme: the stack Jupyter Book 1 is built on, all Python (Jupyter
# Book 2 needs Node), with search, previous/next and downloads built in and served from the site.
project = "Adaptive Inference"
author = "the Adaptive Inference course"
copyright = "the Adaptive Inference course"

extensions = [
    "myst_nb",
    # MathJax 3 served from the site itself (Sphinx's default loads it from a CDN)
    "sphinx-mathjax-offline",
]
nb_execution_mode = "off"            # the site shows the run it is built from
nb_merge_streams = True
nb_render_markdown_format = "myst"   # Markdown outputs (the key-numbers tables) as MyST, with tables; CommonMark has none
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3             # README links such as results/README.md#test-times
# downloads/: the learner's notebooks as handed out, files to download (the banner's link), not pages
exclude_patterns = ["_build", "**.ipynb_checkpoints", "downloads"]

html_theme = "sphinx_book_theme"
html_title = "Adaptive Inference"
html_static_path = ["_static"]
html_css_files = ["course.css"]
html_last_updated_fmt = None
html_use_index = False               # no index entries: an empty index page otherwise
html_copy_source = True              # each page's notebook, to download (the theme's download button)
html_theme_options = {
    "use_download_button": True,
    "use_fullscreen_button": False,
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "home_page_in_toc": True,
}
html_favicon = "_static/favicon.png"   # else browsers ask for /favicon.ico, a 404 in the console
html_context = {"default_mode": "auto"}   # the theme's colour mode; unset, it logs an error at each page
