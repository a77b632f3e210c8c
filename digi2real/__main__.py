import sys

from digi2real.cli import main

if __name__ == "__main__":  # not again in a worker process that imports this module
    sys.exit(main())
