import sys

from stdec.cli import main

sys.exit(main())
