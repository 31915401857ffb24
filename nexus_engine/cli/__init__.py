"""The `nexus` command line: the same engine the app uses, driven from a terminal."""
