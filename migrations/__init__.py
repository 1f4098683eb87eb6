"""Alembic migrations of the recsys schema (run with ``recsys db upgrade``; every command runs them)."""
