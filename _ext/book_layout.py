"""The book's fixes to its theme: navigation at every width, math without internet, and more.

1. **Navigation.** sphinx-book-theme 1.3 on pydata-sphinx-theme 0.17 reads the theme option
   ``navbar_persistent`` as an empty *string* from its theme.conf, so pydata's own header bar
   is rendered above the book's: an empty bar with a second search box on a desktop, and,
   below 992 px, a second "menu" button that grabs the theme's click handler, so the book's
   own menu and "Contents" buttons only show their tooltip. An empty *list* removes that
   header. We set it here, from ``config-inited``, because Jupyter Book builds
   ``html_theme_options`` itself from _config.yml (launch buttons, repository and edit
   buttons); setting the whole dict under ``sphinx: config:`` would drop those.

2. **MathJax, served by the book itself.** Sphinx loads MathJax 3 from a CDN by default, so
   a book built locally and opened offline shows raw ``\\(...\\)``. The MathJax 3 release
   comes from PyPI (``django-static-mathjax``, pinned in requirements.txt: MathJax's own
   files, packaged with no Python dependency); we copy the parts the book uses into
   ``_static/mathjax/`` of the built book and point ``mathjax_path`` there.

3. **Bibliography entries are list items** (see ``_list_roles``).

4. **The book's stylesheet**, ``_static/book.css`` at the book's root (Jupyter Book puts that
   folder on ``html_static_path``; we add the file to every page): no sideways scrolling,
   figures at their natural width capped by the column, exercise solutions as dropdowns.
"""

from __future__ import annotations

import shutil
from importlib import metadata
from pathlib import Path

from sphinx.util import logging

LOG = logging.getLogger(__name__)

MATHJAX_DIST = "django-static-mathjax"
MATHJAX_ES5 = "mathjax/static/mathjax/es5"  # inside that distribution
MATHJAX_SCRIPT = "tex-mml-chtml.js"  # the component Sphinx loads by default
# What tex-mml-chtml.js loads on demand, relative to its own folder: the CHTML fonts, TeX
# extensions (autoload, \require), the MathML input's extensions, the context menu and its
# accessibility explorer (a11y, sre). The SVG output and the other bundles are left out.
MATHJAX_PARTS = [MATHJAX_SCRIPT, "output/chtml", "input/tex", "input/mml", "ui", "a11y", "sre",
                 "adaptors"]  # fmt: skip
MATHJAX_TARGET = "mathjax"  # under the built book's _static/


def _mathjax_source() -> Path | None:
    try:
        dist = metadata.distribution(MATHJAX_DIST)
    except metadata.PackageNotFoundError:
        return None
    es5 = Path(str(dist.locate_file(MATHJAX_ES5)))
    return es5 if (es5 / MATHJAX_SCRIPT).is_file() else None


def _configure(app, config):
    options = dict(config.html_theme_options or {})
    options["navbar_persistent"] = []
    config.html_theme_options = options

    if _mathjax_source() is None:
        LOG.warning(
            "MathJax is not installed (%s, pinned in requirements.txt), so the pages load "
            "it from a CDN and show raw TeX offline: run `make book` or "
            "`pip install -r requirements.txt`",
            MATHJAX_DIST,
        )
        return
    # A relative mathjax_path is relative to the built book's _static/ folder.
    config.mathjax_path = f"{MATHJAX_TARGET}/{MATHJAX_SCRIPT}"


def _copy_mathjax(app, exception):
    source = _mathjax_source()
    if exception is not None or source is None or app.builder.format != "html":
        return
    target = Path(app.outdir) / "_static" / MATHJAX_TARGET
    for part in MATHJAX_PARTS:
        src, dst = source / part, target / part
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        elif src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    # MathJax is Apache-2.0: its licence travels with its files.
    licence = source.parent / "LICENSE"
    if licence.is_file():
        shutil.copy2(licence, target / "LICENSE")


def _list_roles(app, pagename, templatename, context, doctree):
    """Bibliography entries as list items, as the ARIA role of their list requires.

    docutils 0.21 renders a bibliography as ``<div role="list">`` of entries with the
    deprecated role ``doc-biblioentry``; axe-core rates that a critical violation (a list
    whose children are not list items)."""
    if "body" in context:
        context["body"] = context["body"].replace('role="doc-biblioentry"', 'role="listitem"')


def setup(app):
    app.add_css_file("book.css")
    app.connect("config-inited", _configure)
    app.connect("html-page-context", _list_roles)
    app.connect("build-finished", _copy_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
