"""The face: the ``ptlens`` command (typer + rich). Everything here builds a config and calls the library.

``kit`` (shared options, the user-error wrapper, checks before any work), one module per command group
(``behavior``, ``mechanism``, ``report``, ``lab``), and ``app``, which assembles them. Nothing below this package
imports it.
"""

from ptlens.cli.app import app, main

__all__ = ["app", "main"]
