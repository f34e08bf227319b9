"""``python -m qagen``: the same as the ``qagen`` command."""

from qagen.cli.app import main

main()
