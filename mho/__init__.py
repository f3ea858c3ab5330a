"""mho: speech recognizers on memristor crossbars and mobile accelerators."""

__version__ = "0.1.0"
