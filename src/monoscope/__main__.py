"""``python -m monoscope``: the ``monoscope`` command (:mod:`monoscope.cli`)."""

from monoscope.cli import main

raise SystemExit(main())
