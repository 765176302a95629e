"""`python -m bulkonboard` is the `bulkonboard` command."""

from .cli import entry

entry()
