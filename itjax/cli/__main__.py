"""`python -m itjax.cli ARGS`: the `itjax` command (the tests and `itjax sweep` start it this way)."""

from itjax.cli import run

run()
