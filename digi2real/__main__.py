import sys

from digi2real.cli import main

sys.exit(main())
