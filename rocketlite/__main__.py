import sys

from rocketlite.cli import main

sys.exit(main())
