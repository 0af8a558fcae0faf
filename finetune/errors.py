"""The one exception type for mistakes a user can fix (bad params, bad data, missing files)."""


class UserError(Exception):
    """Printed as one clear line by the stage CLI (no traceback), exit status 2."""


class Unsupported(Exception):
    """An optional method (a compression method, an explanation) that does not apply to this model: the stage
    records the reason as a skipped entry and goes on with the others."""
