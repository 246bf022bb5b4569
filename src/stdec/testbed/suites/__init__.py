"""The testbed's synthetic suites: `gsm`, `code` and `lists` (measured), `arith` (a training
aid) and `vision` (pictures drawn with PIL). Get them by name with stdec.tasks.get_task."""

# the task registry first: its import brings in these modules, each of which imports
# stdec.tasks.base, so a suite imported on its own must not start the registry halfway
import stdec.tasks  # noqa: F401
