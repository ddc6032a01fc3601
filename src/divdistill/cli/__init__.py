"""The `divdistill` command line (`divdistill.cli.main:main`)."""


class CLIError(Exception):
    """Bad command-line input: `main` prints it as one line on stderr and exits with code 2."""
