"""A worked example of a user's own code run by the launcher (see my_config.py)."""
