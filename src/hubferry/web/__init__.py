"""The dashboard of ``hubferry serve``: server-rendered pages, htmx fragments and vendored static files."""
