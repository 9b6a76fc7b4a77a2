"""polyai_async.load: the load tester behind ``polyai-async bench``, and its reports.

Everything public is importable from here; the modules behind it are private.
"""

from ._html import render_html, write_html

__all__ = ["render_html", "write_html"]
