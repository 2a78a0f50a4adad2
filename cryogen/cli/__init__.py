"""The `cryogen` command line: one module per verb (its arguments and its run function) over the
library, and `main.main`, which dispatches and turns library errors into one-line messages."""
