"""Imports the function that builds a user's step module, from "package.module:function"."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

from runtime.errors import InputValueError


def resolve_factory(factory: Any) -> Callable[[], Any]:
    """A callable from a callable or from "package.module:function".

    The module is looked up on ``sys.path`` and, failing that, in the current folder (where a
    user runs ``rnn export-module my_model:build``); ``sys.path`` is left as it was.
    """
    if callable(factory):
        return factory
    if not isinstance(factory, str) or factory.count(":") != 1:
        raise InputValueError(f"a factory is written package.module:function, got {factory!r}")
    module_name, function_name = factory.split(":")
    added = os.getcwd() not in sys.path
    if added:
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise InputValueError(f"cannot import {module_name!r} for the factory {factory!r}: {error}") from None
    finally:
        if added:
            sys.path.remove(os.getcwd())
    function = getattr(module, function_name, None)
    if not callable(function):
        raise InputValueError(f"{module_name!r} has no callable {function_name!r}")
    return function
