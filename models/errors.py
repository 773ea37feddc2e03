"""The base exception of the project. It lives in the lowest layer so that models can raise it;
app.core.errors re-exports it and adds the file-related subclasses."""


class HsiError(Exception):
    """Base class of every error the project raises on purpose (the GUI shows its message)."""
