"""The exception types the CLI turns into a one-line message and exit status 2.

They live here, below every other module, so that configuration, data and algorithm code can all
raise them without importing one another.
"""


class UserError(Exception):
    """Bad input the user can fix: the message names the field or file and the fix."""


class ConfigError(UserError, ValueError):
    """A bad configuration value; the message names the field and how to fix it."""


class DataError(UserError):
    """Missing, corrupt or too-small data; the message says where we looked and what to do."""
