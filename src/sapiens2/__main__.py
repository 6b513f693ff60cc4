import sys

from sapiens2.cli.main import main

sys.exit(main())
