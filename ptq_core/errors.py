"""The one exception type of ptq_core: its message names the bad input and how to fix it."""


class PTQError(Exception):
    pass
