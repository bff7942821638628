"""``python -m fabricsim``: the same command line as ``fabricsim``."""

from fabricsim.cli.main import main

if __name__ == "__main__":
    main()
