"""`python -m trimaran` is the `trimaran` command."""

from trimaran.cli.main import main

main()
