"""`python -m training_controller` is the `training-controller` command."""

from training_controller.cli import main

raise SystemExit(main())
