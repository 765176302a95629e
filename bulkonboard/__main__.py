"""`python -m bulkonboard` is the `bulkonboard` command."""

from .program import entry

entry()
