"""The one exception type a user sees as a one-line message (the CLI and the web turn it into text)."""


class RecsysError(Exception):
    """Bad input or an unusable workspace; the message names the file, row or key at fault."""


class NotFound(RecsysError):
    """An item, user or model that the workspace does not hold."""


class NotAnImage(RecsysError):
    """Bytes that do not decode as a picture (the web answers 415 Unsupported Media Type)."""
