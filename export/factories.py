"""Calls the factory that builds a user's step module, with no arguments; one typed line for each way that fails.

A factory is a class or a function, given as a callable or as "package.module:function"
(`rnn.factory.resolve_factory` imports it). It is called with no arguments: a class whose
constructor needs some (``Cell(hidden)``) is refused before the call, saying to write a function
that builds it. A factory that raises, or returns something that is not a ``torch.nn.Module``,
is refused naming what it did.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch

from rnn.factory import resolve_factory
from runtime.errors import InputValueError

from .errors import failing_as

_WRAPPED = "__rnn_checked_factory__"  # marks a factory this module already wraps


def factory_name(factory: Any) -> str:
    """How messages name a factory: "package.module:function" as given, else module:qualname."""
    if isinstance(factory, str):
        return factory
    module = getattr(factory, "__module__", None)
    name = getattr(factory, "__qualname__", None) or type(factory).__name__
    return f"{module}:{name}" if module else name


def required_parameters(function: Callable) -> list[str]:
    """The parameters ``function`` cannot be called without ([] where Python cannot tell)."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # some builtins and C extensions have no signature
        return []
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)  # *args, **kwargs: may be empty
    return [p.name for p in parameters if p.kind not in variadic and p.default is inspect.Parameter.empty]


def build_module(factory: Any) -> torch.nn.Module:
    """The module ``factory`` builds when called with no arguments.

    InputValueError (resolve_factory's) for a name that cannot be imported or is not callable,
    InputValueError for a factory that needs arguments or returns something other than a
    ``torch.nn.Module``, ExportError for one that raises.
    """
    name = factory_name(factory)
    function = resolve_factory(factory)
    needed = required_parameters(function)
    if needed:
        what = "class" if inspect.isclass(function) else "function"
        home, _, short = name.rpartition(":")
        example = f"{getattr(function, '__name__', short)}({', '.join(f'{p}=...' for p in needed)})"
        raise InputValueError(
            f"the factory {name} is called with no arguments, but {what} {short} needs {', '.join(needed)}: "
            f"write a function in {home or 'your module'} that builds the module "
            f"(def build(): return {example}) and pass {home or 'package.module'}:build"
        )
    with failing_as(f"the factory {name} raised"):
        module = function()
    if not isinstance(module, torch.nn.Module):
        weights = " (weights go in with --weights, or module.load_state_dict inside the factory)"
        raise InputValueError(
            f"the factory {name} returned {type(module).__name__}, not a torch.nn.Module: "
            f"it must build and return the step module{weights if isinstance(module, dict) else ''}"
        )
    return module


def checked_factory(factory: Any) -> Any:
    """``factory`` as a callable that runs `build_module` when called (resolved then, not now: a
    folder of a built-in cell never calls it), for `rnn.checkpoint.load_checkpoint`; None stays None."""
    if factory is None or getattr(factory, _WRAPPED, False):
        return factory

    def build() -> torch.nn.Module:
        return build_module(factory)

    setattr(build, _WRAPPED, True)
    return build
