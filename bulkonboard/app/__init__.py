"""The library forms of `validate` and `run`: read, check, send, write; policies such as default paths."""
