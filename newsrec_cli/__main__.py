"""`python -m newsrec_cli` runs the same app as the `newsrec` command."""

from newsrec_cli.cli import main

if __name__ == "__main__":
    main()
