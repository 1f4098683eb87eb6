"""`python -m recsys.cli`."""

from recsys.cli import main

main()
