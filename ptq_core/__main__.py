import sys

from ptq_core.cli import main

sys.exit(main())
