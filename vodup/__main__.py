import sys

from vodup.cli import main

sys.exit(main())
