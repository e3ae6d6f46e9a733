"""The one exception type the command line and the Slicer module turn into a one-line message."""


class InputError(ValueError):
    """Bad user input (file, shape, parameter). The message is a complete sentence for the user."""
