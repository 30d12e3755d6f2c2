"""``python -m hubferry.registry``: the ``hubferry hub`` commands without the top-level CLI."""

from .cli import hub_app

hub_app(prog_name="hubferry hub")
