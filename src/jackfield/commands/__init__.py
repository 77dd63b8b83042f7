"""Subcommands of `jackfield`, one module each (see `jackfield.cli`)."""
