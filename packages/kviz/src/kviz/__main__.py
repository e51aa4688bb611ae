"""``python -m kviz summary MODULE:FACTORY --input-size 1,3,32,32`` and
``python -m kviz plot MODULE:FACTORY -o model.png`` (see ``kviz._cli``)."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
