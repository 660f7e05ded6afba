"""Reproductions of the paper's tables and figures, each a command."""
