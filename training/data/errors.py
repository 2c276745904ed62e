"""Errors and warnings raised for bad data on disk."""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset on disk is missing, unreadable or inconsistent.

    The message always names the file or folder concerned and, for layout problems, shows the
    layout that was expected next to what was found.
    """


class UnknownLabelWarning(UserWarning):
    """Label files hold ids outside the dataset's label table; those pixels were mapped to 255."""
