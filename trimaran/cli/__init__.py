"""The `trimaran` command line."""
