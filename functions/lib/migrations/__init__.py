"""Alembic's migrations of the catalog (`env.py` and `versions/`); `functions.lib.schema` runs them."""
