"""The one exception type for mistakes a user can fix (bad params, bad data, missing files)."""


class UserError(Exception):
    """Printed as one clear line by the stage CLI (no traceback), exit status 2."""
