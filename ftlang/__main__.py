import sys

from ftlang.runtime.cli import main

sys.exit(main())
