"""The ``fabricsim`` command line: one root group, one module per command."""
