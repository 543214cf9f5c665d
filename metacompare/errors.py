"""The one exception type the CLI turns into a one-line message and exit status 2."""


class UserError(Exception):
    """Bad input the user can fix: the message names the field or file and the fix."""
