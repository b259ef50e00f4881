import sys

from .cli import main

if __name__ == "__main__":  # not when a process of an ensemble's training imports it again (spawn)
    sys.exit(main())
