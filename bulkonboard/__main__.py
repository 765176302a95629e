"""`python -m bulkonboard` is the `bulkonboard` command."""

from .cli import main

main()
