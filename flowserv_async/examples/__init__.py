"""Example workflow templates shipped with flowserv-async (template folders, no code)."""
