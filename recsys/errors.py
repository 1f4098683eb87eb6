"""The one exception type a user sees as a one-line message (the CLI and the web turn it into text)."""


class RecsysError(Exception):
    """Bad input or an unusable workspace; the message names the file, row or key at fault."""


class NotFound(RecsysError):
    """An item, user or model that the workspace does not hold."""


class NotAnImage(RecsysError):
    """Bytes that do not decode as a picture (the web answers 415 Unsupported Media Type)."""


class Conflict(RecsysError):
    """A write that contradicts what is stored, e.g. an event_key reused with another payload (409)."""


class TooLarge(RecsysError):
    """Input above one of recsys's own size limits (the web answers 413 Content Too Large)."""
