"""Helpers shared by test modules (imported as `helpers.X`; tests/ is on sys.path under pytest)."""
