import sys

from dicomlake.cli import main

sys.exit(main())
