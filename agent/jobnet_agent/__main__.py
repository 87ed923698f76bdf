import sys

from jobnet_agent.cli import main

sys.exit(main())
