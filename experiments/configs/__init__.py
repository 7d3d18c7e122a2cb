"""Experiment configs: one ``get_config()`` per scenario (docstring = launch command)."""
