"""``python -m hubferry`` runs the CLI."""

from hubferry.cli import app

app()
