"""Errors that reach the user: one line each, naming the file or config key to fix."""


class Digi2RealError(Exception):
    """A problem the user can fix; the CLI prints it as one line, without a traceback."""


class ConfigError(Digi2RealError):
    pass


class ModelFileError(Digi2RealError):
    pass


class DataError(Digi2RealError):
    pass
