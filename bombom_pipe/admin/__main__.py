"""`python -m bombom_pipe.admin`: the same as the `bombom` command."""

from . import main

main()
