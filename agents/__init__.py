"""Learners: one module per algorithm; the module name is the registry key."""
