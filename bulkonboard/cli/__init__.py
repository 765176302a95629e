"""The click commands, terminal output and the installed program: wiring only."""
