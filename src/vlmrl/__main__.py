"""``python -m vlmrl`` (also what ``torchrun -m vlmrl`` runs)."""

import sys

from vlmrl.cli.main import main

sys.exit(main())
