"""`python -m bulkonboard.sandbox ...`: the same command as `bulkonboard sandbox`, for tests that start it as a
subprocess without the main CLI."""

from .cli import sandbox_command

if __name__ == "__main__":
    sandbox_command(prog_name="python -m bulkonboard.sandbox")
