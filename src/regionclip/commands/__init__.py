"""Sub-commands of the ``regionclip`` command line, one module each (see :mod:`regionclip.cli`)."""
