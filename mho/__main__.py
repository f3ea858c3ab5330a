"""`python -m mho`: the same CLI as the `mho` command."""

from mho.cli import main

main()
