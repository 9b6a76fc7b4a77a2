"""A griffe extension that gives attrs classes the ``__init__`` signature attrs makes at run time.

Griffe reads source, not objects, so it sees no ``__init__`` on an ``@attrs.frozen`` or
``@attrs.define`` class: the API reference would show ``Timeouts()``. This rebuilds the
parameters from the annotated fields (``attrs.field(default=..., factory=..., init=...,
kw_only=...)``, ``attrs.Factory(...)``) and shows each field's default instead of the
``attrs.field(...)`` call. It also writes a default that names a module constant
(``max_response_bytes=DEFAULT_MAX_RESPONSE_BYTES``) as the constant's value (``1048576``), as
the reader needs it. mkdocs.yml loads it; it is not part of the package.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from typing import Any

import griffe


def _call_arguments(value: object) -> dict[str, Any] | None:
    if isinstance(value, griffe.ExprCall):
        return {
            arg.name: arg.value for arg in value.arguments if isinstance(arg, griffe.ExprKeyword)
        }
    return None


def _attrs_decorator(cls: griffe.Class) -> dict[str, Any] | None:
    for decorator in cls.decorators:
        text = str(decorator.value)
        if text.startswith(("attrs.frozen", "attrs.define", "attrs.mutable")):
            return _call_arguments(decorator.value) or {}
    return None


def _field(attribute: griffe.Attribute) -> tuple[bool, bool, object]:
    """Return (in __init__, keyword-only, default) for one field."""
    value = attribute.value
    text = str(value) if value is not None else ""
    if text.startswith("attrs.Factory("):
        assert isinstance(value, griffe.ExprCall)
        return True, False, f"{value.arguments[0]}()"
    if not text.startswith("attrs.field("):
        return True, False, value
    args = _call_arguments(value) or {}
    default: object = args.get("default")
    if "factory" in args:
        default = f"{args['factory']}()"
    return str(args.get("init")) != "False", str(args.get("kw_only")) == "True", default


_OPERATORS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
    ast.Pow: operator.pow,
}


def _number(node: ast.expr) -> int | float | None:
    """The value of a constant number expression such as ``1024 * 1024``, else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return None if isinstance(node.value, bool) else node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _number(node.left), _number(node.right)
        if left is not None and right is not None:
            result: int | float = _OPERATORS[type(node.op)](left, right)
            return result
    return None


def _constant_value(default: object, function: griffe.Function) -> str | None:
    """The number a default names, when it is a module constant (``NAME = 1024 * 1024``)."""
    if not isinstance(default, griffe.ExprName):
        return None
    member = function.module.members.get(default.name)
    if member is not None and member.is_alias:
        member = member.final_target  # type: ignore[union-attr]
    if not isinstance(member, griffe.Attribute) or member.value is None:
        return None
    try:
        value = _number(ast.parse(str(member.value), mode="eval").body)
    except SyntaxError:
        return None
    return None if value is None else repr(value)


class AttrsInit(griffe.Extension):
    """Add ``__init__`` to every attrs class of the loaded package; show constants' values."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Walk the package once it is loaded."""
        self._visit(pkg)
        self._show_constant_defaults(pkg)

    def _show_constant_defaults(self, obj: griffe.Object) -> None:
        for member in obj.members.values():
            if member.is_alias:
                continue
            if isinstance(member, griffe.Function):
                for parameter in member.parameters:
                    value = _constant_value(parameter.default, member)
                    if value is not None:
                        parameter.default = value
            if isinstance(member, griffe.Module | griffe.Class):
                self._show_constant_defaults(member)

    def _visit(self, obj: griffe.Object) -> None:
        for member in obj.members.values():
            if member.is_alias:
                continue
            if isinstance(member, griffe.Class):
                self._add_init(member)
            if isinstance(member, griffe.Module | griffe.Class):
                self._visit(member)

    @staticmethod
    def _add_init(klass: griffe.Class) -> None:
        options = _attrs_decorator(klass)
        if options is None or "__init__" in klass.members:
            return
        all_kw_only = str(options.get("kw_only")) == "True"
        positional: list[griffe.Parameter] = []
        keyword: list[griffe.Parameter] = []
        for member in list(klass.members.values()):
            if not isinstance(member, griffe.Attribute) or member.annotation is None:
                continue
            # Properties and ClassVars (griffe labels them class-only) are not fields.
            if "property" in member.labels or (
                "class-attribute" in member.labels and "instance-attribute" not in member.labels
            ):
                continue
            in_init, kw_only, default = _field(member)
            member.value = default  # type: ignore[assignment]
            if not in_init:
                continue
            kind = "keyword-only" if all_kw_only or kw_only else "positional or keyword"
            parameter = griffe.Parameter(
                member.name.lstrip("_"),
                annotation=member.annotation,
                kind=griffe.ParameterKind(kind),
                default=default,  # type: ignore[arg-type]
            )
            (keyword if kind == "keyword-only" else positional).append(parameter)
        init = griffe.Function(
            "__init__",
            parameters=griffe.Parameters(
                griffe.Parameter("self", kind=griffe.ParameterKind("positional or keyword")),
                *positional,
                *keyword,
            ),
            returns="None",
            parent=klass,
        )
        klass.set_member("__init__", init)
        klass.labels.add("attrs")
