"""``python -m gateway.cli``: the ``ringfence`` command."""

from gateway.cli.main import main

main()
