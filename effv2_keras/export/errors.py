"""The one error type of export/: a user error with a one-line explanation.

Messages name Python arguments (``image_size``); a front end that calls them by other
names (the CLI's ``--image_size``) renders the same error in its own words:

    >>> error = ExportError("{int8_io} needs {quantize} 'int8'.", "int8_io", "quantize")
    >>> str(error)
    "int8_io needs quantize 'int8'."
    >>> error.render(lambda name: "--" + name)
    "--int8_io needs --quantize 'int8'."
"""

from __future__ import annotations

from typing import Callable, Optional


class ExportError(ValueError):
    """One line; ``{name}`` fields of ``template`` are the Python arguments in ``arguments``."""

    def __init__(self, template: str, *arguments: str):
        self.template = template
        self.arguments = arguments
        super().__init__(self.render())

    def render(self, name_of: Optional[Callable[[str], str]] = None) -> str:
        """The message with every argument written as ``name_of(argument)``."""
        text = self.template
        for name in self.arguments:
            text = text.replace("{" + name + "}", name_of(name) if name_of else name)
        return text


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type name when empty)."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
