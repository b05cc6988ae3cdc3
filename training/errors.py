"""The one exception type the command line turns into a clean error."""


class UserError(ValueError):
    """Bad input a user can fix: the message names it and says what to do."""
