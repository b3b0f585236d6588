"""The application layer: each run kind as a typed config and one function, above the model library and
below the CLI (``regionclip.commands`` parses arguments and calls these; the demo and scripts call them
directly).

* :mod:`~regionclip.tasks.run`: :func:`setup_run`, shared by every training run (distributed, seeding,
  the output folder claimed and locked, the resolved config written).
* :mod:`~regionclip.tasks.train_clip`, :mod:`~regionclip.tasks.train_rpn`, :mod:`~regionclip.tasks.pretrain`,
  :mod:`~regionclip.tasks.train_detector`: the training runs.
* :mod:`~regionclip.tasks.evaluate`, :mod:`~regionclip.tasks.eval_rpn`, :mod:`~regionclip.tasks.pseudo_label`:
  the inference runs; :mod:`~regionclip.tasks.detect`: detection on image files (``detect``, ``index``,
  ``serve``).
"""
