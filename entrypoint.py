"""The container's entrypoint: hand the runner's environment to deploygate's action shell."""

import os
import sys

from deploygate.shells.action import main

if __name__ == "__main__":
    sys.exit(main(os.environ))
