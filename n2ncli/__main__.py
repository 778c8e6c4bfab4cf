"""Allow ``python -m n2ncli``."""

from n2ncli.cli import main

main()
