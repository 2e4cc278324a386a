"""What loading a configuration raises instead of returning one."""

from __future__ import annotations


class ConfigError(Exception):
    """The configuration cannot be used; the message is one line naming the key, the value and what is accepted."""


class HelpRequested(Exception):
    """``-h``/``--help`` was given: ``text`` is the help to print before exiting with status 0."""

    def __init__(self, text: str) -> None:
        super().__init__("help requested")
        self.text = text
