"""``python -m slimkit``: the same command line as the ``slimkit`` script."""

from slimkit.cli import main

main()
