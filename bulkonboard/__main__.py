"""`python -m bulkonboard` is the `bulkonboard` command."""

from .cli.program import entry

entry()
