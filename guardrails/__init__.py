"""Guardrails: pure-Python input and output guards behind one interface (see base.py)."""
